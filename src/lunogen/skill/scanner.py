"""A static scanner for skill packages: pure functions over bytes and text, no I/O.

Each rule reports findings `{rule, severity, file, line, excerpt, message}`. Any finding leaves
the skill `flagged` until its owner approves that version. The text rules aim at what a hostile
or compromised skill does to an agent: fetch and run code, send credentials away, hide a
payload, hide text from the reviewer, or talk the model out of its instructions. A binary file
is not read as text: its leading bytes name it, and what the scanner cannot read (a program, an
archive, data of no known media type, text past the package's budget) is a finding itself.

Cost: at most MAX_SCANNED_TEXT_CHARS of text per package, and linear in it: patterns use bounded
repetition; one with a window between two parts ("curl … | sh") is a `_Near`, which finds each
part once instead of re-reading the window after every occurrence of the first; and every
pattern is written so that the regex engine can skip ahead to its first literal (`_Rx`).
"""

from __future__ import annotations

import codecs
import heapq
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import Any

EXCERPT_CHARS = 120
MAX_FINDINGS_PER_RULE_AND_FILE = 10
MAX_FINDINGS = 200
BLOB_MIN_CHARS = 200
EXFIL_WINDOW_LINES = 5
# Text read per package: SKILL.md, then scripts/, references/ and assets/. Scanning costs about
# 0.35 s of CPU per MiB of ordinary text and at most about 0.5 s per MiB of crafted text; the
# largest public skills (docx, pptx, xlsx: 1.1 MB of text each) fit with room to spare.
MAX_SCANNED_TEXT_CHARS = 2 * 1024 * 1024
SNIFF_BYTES = 8 * 1024  # a NUL byte among these makes a file binary
MAX_REPLACED_SHARE = 0.1  # undecodable bytes tolerated in a text file (a stray Latin-1 byte)

DOWNLOAD_EXEC = "download-exec"
CREDENTIAL_ACCESS = "credential-access"
ENV_EXFILTRATION = "env-exfiltration"
SECRET_LITERAL = "secret-literal"
ENCODED_BLOB = "encoded-blob"
DECODE_EXEC = "decode-exec"
HIDDEN_UNICODE = "hidden-unicode"
PROMPT_INJECTION = "prompt-injection"

BINARY_EXECUTABLE = "binary-executable"
ARCHIVE = "archive"
UNKNOWN_BINARY = "unknown-binary"
TOO_LARGE_TO_SCAN = "too-large-to-scan"

RULES: dict[str, tuple[str, str]] = {
    DOWNLOAD_EXEC: ("high", "downloads code and runs it in one step"),
    CREDENTIAL_ACCESS: ("high", "reads credentials or secret files"),
    ENV_EXFILTRATION: ("high", "dumps the environment and sends data over the network"),
    SECRET_LITERAL: ("medium", "contains what looks like an API key or private key"),
    ENCODED_BLOB: ("medium", "contains a long encoded blob"),
    DECODE_EXEC: ("high", "decodes data and executes it"),
    HIDDEN_UNICODE: ("high", "contains invisible or text-direction Unicode characters"),
    PROMPT_INJECTION: ("high", "contains phrasing that tries to override the agent's instructions"),
}
"""The text rules; FILE_RULES are about whole files the text rules did not read."""

FILE_RULES: dict[str, tuple[str, str]] = {
    BINARY_EXECUTABLE: ("high", "is a compiled or serialized program, which cannot be scanned"),
    ARCHIVE: ("medium", "is an archive or compressed data, whose contents cannot be scanned"),
    UNKNOWN_BINARY: ("medium", "is binary data of no known media type, which cannot be scanned"),
    TOO_LARGE_TO_SCAN: (
        "medium",
        f"is past the scanner's budget ({MAX_SCANNED_TEXT_CHARS} characters of text per "
        "package): the rest of it was not scanned",
    ),
}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    excerpt: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FOLD_FIXES = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})


def _fold(text: str) -> str:
    """Lowercase, one character for one: an offset in the result is the same offset in `text`,
    and a lowercase pattern matches the result exactly where it matches `text` under
    re.IGNORECASE (which also takes U+0130, U+0131 and U+017F for i, i and s; lower() alone
    would not, and turns U+0130 into two characters)."""
    if "\u0130" in text or "\u0131" in text or "\u017f" in text:
        text = text.translate(_FOLD_FIXES)
    return text.lower()


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


class _Text:
    """A file's text with line lookup: each pattern runs over the whole text (fast), and
    matches are mapped back to line numbers."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.folded = _fold(text)
        # Where each line starts, without a Python step per line.
        lengths = map((1).__add__, map(len, text.split("\n")))
        self.starts = list(accumulate(lengths, initial=0))[:-1]
        self._cursors: dict[_Rx | _Near, _Cursor] = {}
        self._contains: dict[tuple[str, ...], bool] = {}

    def line_number(self, offset: int) -> int:
        return bisect_right(self.starts, offset)

    def line(self, number: int) -> str:
        start = self.starts[number - 1]
        end = self.text.find("\n", start)
        return self.text[start : end if end >= 0 else len(self.text)]

    def column(self, number: int, offset: int) -> int:
        return offset - self.starts[number - 1]

    def next_line(self, number: int) -> int | None:
        return self.starts[number] if number < len(self.starts) else None

    def contains_any(self, needles: tuple[str, ...]) -> bool:
        """Whether the folded text contains one of `needles`, found once per text."""
        if needles not in self._contains:
            self._contains[needles] = any(needle in self.folded for needle in needles)
        return self._contains[needles]

    def cursor(self, matcher: _Rx | _Near) -> _Cursor:
        if matcher not in self._cursors:
            self._cursors[matcher] = _Cursor(self, matcher)
        return self._cursors[matcher]

    def matches(self, matchers: Iterable[_Rx | _Near]) -> Iterator[tuple[int, int]]:
        """(line number, offset) of the first match of any matcher on each line, in order,
        found as they are asked for."""
        last = 0
        for number, offset in heapq.merge(*(self._first_per_line(m) for m in matchers)):
            if number != last:
                last = number
                yield number, offset

    def _first_per_line(self, matcher: _Rx | _Near) -> Iterator[tuple[int, int]]:
        # After a match, go on from the next line: one search per matching line, not per match.
        position: int | None = 0
        while position is not None:
            start = matcher.first(self, position)
            if start is None:
                return
            number = self.line_number(start)
            yield number, start
            position = self.next_line(number)


class _Cursor:
    """The first match of a matcher at or after a position, remembered: no match begins
    between the position last asked and the match found for it, so the positions that rise
    through a text (one `_Near` anchor after another) cost one pass over it in all."""

    def __init__(self, text: _Text, matcher: _Rx | _Near) -> None:
        self._text = text
        self._matcher = matcher
        self._asked = 0
        self._found = matcher.first(text, 0)

    def at_or_after(self, position: int) -> int | None:
        if position < self._asked or (self._found is not None and position > self._found):
            self._asked, self._found = position, self._matcher.first(self._text, position)
        return self._found


class _Rx:
    """A regex, run so that the engine can skip ahead to where a match could begin.

    Python's `re` looks for a pattern's literal prefix (or the set of its first characters)
    with a fast scan, but only when the pattern starts with a literal and is case-sensitive;
    otherwise it runs its matcher at every position (about 18 ms per MiB for each pattern,
    against 1 ms). So a case-insensitive pattern is written in lowercase and runs, without
    re.IGNORECASE, over the folded text (`_fold`); and a leading `\\b` (before a word
    character) is checked here rather than by the engine. `needs`: strings (lowercase) one of
    which the text must contain, for patterns that start with no literal at all.
    """

    def __init__(
        self,
        source: str,
        *,
        ignore_case: bool = True,
        flags: int = 0,
        needs: tuple[str, ...] = (),
    ) -> None:
        self.word_start = source.startswith(r"\b")
        body = source[2:] if self.word_start else source
        if ignore_case and re.search("[A-Z]", re.sub(r"\\.", "", body)):
            raise ValueError(f"a case-insensitive pattern is written in lowercase: {source}")
        self.folded = ignore_case
        self.needs = needs
        self.regex = re.compile(body, flags)

    def search(self, text: _Text, position: int) -> re.Match[str] | None:
        """The leftmost match that begins at `position` or after."""
        string = text.folded if self.folded else text.text
        if not self.word_start and not self.needs:
            return self.regex.search(string, position)
        if self.needs and not text.contains_any(self.needs):
            return None
        while (found := self.regex.search(string, position)) is not None:
            start = found.start()
            if not (self.word_start and start and _is_word(string[start - 1])):
                return found
            position = start + 1
        return None

    def first(self, text: _Text, position: int) -> int | None:
        found = self.search(text, position)
        return None if found is None else found.start()


class _Near:
    """What the regex `anchor[^<stops>]{0,width}?target` matches, found in linear time.

    A regex engine reads the whole window again after every anchor, so text dense with anchors
    costs `width` steps per character ("eval(" repeated: 9 s of CPU per MiB). Here each anchor
    asks a `_Cursor` for the first target after its end, and the cursor reads the text once.
    Two properties of the anchors below make this exact: an anchor counts with its longest
    match, the one that reaches furthest (no target begins inside an anchor's trailing
    whitespace); and no anchor lies inside another, so a later anchor never ends earlier.
    """

    def __init__(
        self,
        anchor: _Rx,
        target: _Rx | _Near | Sequence[_Rx | _Near],
        width: int,
        stops: str = "\n",
    ) -> None:
        self._anchor = anchor
        self._targets = [target] if isinstance(target, (_Rx, _Near)) else list(target)
        self._width = width
        self._stop = re.compile(f"[{re.escape(stops)}]")

    def first(self, text: _Text, position: int) -> int | None:
        """The first anchor at `position` or after with a target at most `width` characters
        after its end, and no stop character in between."""
        cursors = [text.cursor(target) for target in self._targets]
        while (anchor := self._anchor.search(text, position)) is not None:
            end = anchor.end()
            if len(cursors) == 1:
                target = cursors[0].at_or_after(end)
            else:
                found = [cursor.at_or_after(end) for cursor in cursors]
                target = min((t for t in found if t is not None), default=None)
            if target is None:
                return None  # no target after this anchor, so none after any later one
            if target - end <= self._width and not self._stop.search(text.text, end, target):
                return anchor.start()
            position = anchor.start() + 1
        return None


_SHELLS = r"(?:sudo\s+(?:-\S+\s+)*)?(?:ba|z|da|k|fi)?sh|python[0-9.]*|perl|ruby|node|php"
_FETCH = r"(?:curl|wget|fetch)\b"
_PIPE_TO_SHELL = _Rx(rf"\|\s*(?:{_SHELLS})\b")
_DOWNLOAD_EXEC: list[_Rx | _Near] = [
    _Near(_Rx(_FETCH), _PIPE_TO_SHELL, 300, stops="\n|;"),
    _Rx(rf"(?:{_SHELLS})\s+(?:-s\s+)?<\(\s*{_FETCH}", needs=("<(",)),
    _Rx(rf"(?:(?:ba|z)?sh\s+-c|eval)\s+[\"']?\$\(\s*{_FETCH}", needs=("$(",)),
    _Rx(
        r"\b(?:iex|invoke-expression)\b[\s(]{0,5}(?:\(\s*)?(?:iwr|irm|invoke-webrequest|"
        r"invoke-restmethod|new-object\s+(?:system\.)?net\.webclient)"
    ),
    _Near(
        _Rx(r"\b(?:iwr|irm|invoke-webrequest|invoke-restmethod)\b"),
        _Rx(r"\|\s*(?:iex|invoke-expression)\b"),
        300,
        stops="\n|",
    ),
    _Near(
        _Rx(r"\b(?:exec|eval)\s*\("),
        _Rx(r"urlopen|urllib\.request|requests\.get|httpx\.get|urlretrieve"),
        200,
    ),
    _Near(
        _Rx(r"python[0-9.]*\s+-c\s+"),
        _Near(_Rx(r"urllib|urlopen|requests"), _Rx(r"\bexec\s*\("), 300),
        300,
    ),
]

_ENV_FILE = _Rx(r"[\"'(\s/]\.env\b(?![.\w])", needs=(".env",))
_CREDENTIAL_PATHS: list[_Rx | _Near] = [
    _Rx(r"(?:~|\$home|\$\{home\}|/home/[^/\s]{1,64}|/root|expanduser\([\"']~)/?\.ssh\b"),
    _Rx(r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b(?!\.pub)"),
    _Rx(r"\.aws/(?:credentials|config)\b"),
    _Rx(r"/etc/(?:shadow|gshadow|sudoers)\b"),
    _Rx(r"(?:~|\$home)/\.(?:netrc|git-credentials|pgpass|npmrc|pypirc)\b"),
    _Rx(r"\.(?:docker/config\.json|kube/config)\b"),
    _Near(_Rx(r"\b(?:cat|less|head|tail|source|cp|scp|open)\b"), _ENV_FILE, 40),
    _Near(
        _Rx(r"(?:read_text|read_bytes|readfile(?:sync)?|load_dotenv|dotenv_values)\b"),
        _ENV_FILE,
        40,
    ),
]

_ENV_DUMP: list[_Rx | _Near] = [
    _Rx(
        r"(?:^|[|;&`(]|\$\()[ \t]*(?:printenv|env|set|export[ \t]+-p)[ \t]*(?:$|[|>;&)`])",
        flags=re.MULTILINE,
    ),
    _Rx(
        r"(?:dict|str|repr|json\.dumps|list)\(\s*os\.environ\b|os\.environ(?:\.copy\(\)|\.items\(\))|"
        r"\*\*os\.environ|JSON\.stringify\(\s*process\.env\b|Object\.(?:entries|keys)\(\s*process\.env\b",
        ignore_case=False,
    ),
    _Rx(r"\b(?:get-childitem|gci|ls)\s+env:"),
]
_NETWORK_SEND: list[_Rx | _Near] = [
    _Near(
        _Rx(r"\bcurl\b", ignore_case=False),
        _Rx(
            r"[ \t]-(?:d|-data|F\b|-form|T\b|-upload-file|X[ \t]*(?:POST|PUT)|"
            r"-request[ \t]+(?:POST|PUT))",
            ignore_case=False,
        ),
        300,
    ),
    _Near(_Rx(r"\bwget\b"), _Rx(r"--post-(?:data|file)"), 300),
    _Rx(r"\b(?:requests|httpx|session|client)\.(?:post|put|patch)\s*\("),
    _Near(_Rx(r"\burlopen\s*\("), _Rx(r"data\s*="), 200),
    _Near(
        _Rx(r"(?:^|[|;&\s])(?:nc|ncat|netcat|socat)[ \t]+", ignore_case=False, flags=re.MULTILINE),
        _Rx(r"\d", ignore_case=False),
        100,
    ),
    _Rx(r"/dev/(?:tcp|udp)/"),
    _Near(_Rx(r"\bfetch\s*\("), _Rx(r"method\s*:\s*[\"'](?:post|put)"), 300),
    _Near(_Rx(r"\binvoke-(?:webrequest|restmethod)\b"), _Rx(r"-method\s+(?:post|put)"), 300),
    _Rx(r"\bsocket\.(?:socket|create_connection)\b"),
]
_SENDERS = _Rx(r"(?:curl|wget|nc|ncat|netcat|socat)\b")
_NETWORK_PIPE = [
    _Near(_Rx(r"printenv\s*\|"), _SENDERS, 200),
    _Near(_Rx(r"\benv\s*\|"), _SENDERS, 200),
]

_SECRET_LITERALS: list[_Rx | _Near] = [
    _Rx(r"\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{32,}", ignore_case=False),
    _Rx(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", ignore_case=False),
    _Rx(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}\b|github_pat_[A-Za-z0-9_]{50,})", ignore_case=False),
    _Rx(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}", ignore_case=False),
    _Rx(r"\bAIza[0-9A-Za-z_\-]{35}\b", ignore_case=False),
    _Rx(r"\b[sr]k_live_[0-9A-Za-z]{20,}", ignore_case=False),
    _Rx(r"\blg_live_[0-9a-f]{64}\b", ignore_case=False),
    _Rx(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----",
        ignore_case=False,
    ),
]

# A run of encoded characters is matched from its first character only (the lookbehind), so
# a long run of near misses costs one attempt, not one per character.
_HEX_BLOB = re.compile(rf"(?:\\x)?(?<![0-9a-fA-F])[0-9a-fA-F]{{{BLOB_MIN_CHARS},}}")
_ESCAPED_HEX_BLOB = re.compile(
    rf"(?<!\\x[0-9a-fA-F]{{2}})(?:\\x[0-9a-fA-F]{{2}}){{{BLOB_MIN_CHARS // 2},}}"
)
_B64_BLOB = re.compile(rf"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{{{BLOB_MIN_CHARS},}}={{0,2}}")
_DATA_IMAGE = re.compile(r"data:image/[a-z0-9.+\-]{1,20};base64,$", re.IGNORECASE)
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")

_DECODERS = _Rx(
    r"b64decode|b32decode|a85decode|decodebytes|codecs\.decode|bytes\.fromhex|unhexlify|"
    r"atob\s*\(|zlib\.decompress|gzip\.decompress|lzma\.decompress|marshal\.loads|"
    r"frombase64string"
)
_BUFFER_DECODE = _Near(_Rx(r"buffer\.from\("), _Rx(r"[\"'](?:base64|hex)[\"']"), 200, stops="\n)")
_DECODE_EXEC: list[_Rx | _Near] = [
    _Near(
        _Rx(
            r"\b(?:exec|eval|compile|function|execsync|system|popen|iex|invoke-expression)"
            r"\s*\("
        ),
        [_DECODERS, _BUFFER_DECODE],
        300,
    ),
    _Near(
        _Rx(r"(?:base64|openssl\s+(?:base64|enc))\s+(?:-\w+\s+)*(?:-d|--decode)\b"),
        _PIPE_TO_SHELL,
        200,
        stops="\n|",
    ),
    _Near(_Rx(r"\bxxd\s+-r\b"), _PIPE_TO_SHELL, 200, stops="\n|"),
    # A media file run by an interpreter: a script hidden in (or appended to) an image, font or
    # document, which the scanner reads as media and never as text.
    _Rx(
        r"(?:^|[\s;&|(`])(?:sh|bash|zsh|dash|ksh|python[0-9.]*|node|perl|ruby|php|source|\.)"
        r"\s+(?:-\S+\s+)*[^\s|;&]*assets/[^\s|;&]*\.(?:png|jpe?g|gif|bmp|ico|webp|tiff?|pdf|"
        r"ttf|otf|ttc|woff2?|mp3|wav|ogg|flac|mp4|mov|mkv|webm|avi)\b",
        flags=re.MULTILINE,
        needs=("assets/",),
    ),
    _Near(_Rx(r"\|\s*(?:base64\s+(?:-d|--decode)|xxd\s+-r)\b"), _PIPE_TO_SHELL, 100, stops="\n|"),
]

_INVISIBLE = "\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff\U000e0000-\U000e007f"
_EMOJI = "\U0001f000-\U0010ffff\u2600-\u27bf\ufe0f"
# Reported: every invisible character but a zero-width joiner inside an emoji sequence.
_HIDDEN = re.compile(
    "[\u202a-\u202e\u2066-\u2069\u200b\u200c\u2060\ufeff\U000e0000-\U000e007f]"
    f"|(?<![{_EMOJI}])\u200d"
)
_SHOWN_ESCAPED = re.compile(f"[{_INVISIBLE}]")

_INJECTION: list[_Rx | _Near] = [
    _Rx(
        r"\bignore\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+)?"
        r"(?:previous|prior|above|earlier|preceding|former|system|original)\s+"
        r"(?:instructions?|prompts?|messages?|rules|directions|directives|context|guidelines)"
    ),
    _Rx(
        r"\bdisregard\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+)?"
        r"(?:previous\s+|prior\s+|above\s+|earlier\s+|system\s+|original\s+)"
        r"(?:instructions?|prompts?|messages?|rules|directions|guidelines)"
    ),
    _Rx(r"\bdisregard\s+(?:the\s+|your\s+)?system\s+prompt"),
    _Rx(
        r"\bforget\s+(?:all\s+|everything\s+(?:in\s+)?)?(?:your|the|previous|prior)\s+"
        r"(?:previous\s+|prior\s+)?(?:instructions|rules|prompt|guidelines)"
    ),
    _Rx(r"\boverride\s+(?:the\s+|your\s+)(?:system\s+prompt|instructions|safety|guidelines)"),
    _Rx(
        r"\byou\s+are\s+now\s+(?:dan\b|no\s+longer\b|free\s+(?:from|of)\b|unrestricted|jailbroken|"
        r"in\s+(?:developer|god|dan)\s+mode|an?\s+(?:unrestricted|unfiltered|uncensored|"
        r"different|new|evil)\s+(?:ai|assistant|model|agent))"
    ),
    _Rx(
        r"\bfrom\s+now\s+on,?\s+you\s+(?:will\s+|must\s+|shall\s+)?(?:ignore|disregard|no\s+longer)"
    ),
    _Rx(
        r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|notify|alert|mention\s+(?:this\s+|it\s+)?to|"
        r"reveal\s+(?:this\s+|it\s+)?to|let)\s+the\s+user\b"
    ),
    _Rx(r"\bwithout\s+(?:telling|informing|notifying|alerting|asking)\s+the\s+user\b"),
    _Rx(r"\b(?:keep|hide)\s+(?:this|it|these\s+\w+)\s+(?:secret\s+|hidden\s+)?from\s+the\s+user\b"),
    _Rx(
        r"\b(?:reveal|print|show|output|repeat|leak|dump|disclose|display)\s+(?:me\s+)?"
        r"(?:your|the)\s+(?:full\s+|entire\s+|original\s+|complete\s+|hidden\s+)?"
        r"(?:system\s+prompt|system\s+message|hidden\s+instructions|initial\s+instructions)"
    ),
    _Rx(
        r"\b(?:send|post|upload|forward|exfiltrate|transmit|copy|leak)\s+"
        r"(?:(?:the|this|all|entire|full|whole|of|user'?s?|previous)\s+){0,4}"
        r"(?:conversation|chat\s+(?:history|log|transcript)|message\s+history|messages|transcript)"
        r"(?:\s+\w+){0,3}\s+(?:to|at|via)\s+(?:https?://|\S+@|[\w.-]+\.\w{2,}|a\s+|an\s+|the\s+|my\s+)"
    ),
    _Rx(r"<\|im_start\|>\s*system|<\|system\|>|\[/?inst\]"),
]


def _excerpt(line: str, start: int = 0) -> str:
    begin = max(0, start - 20)
    text = line[begin : begin + EXCERPT_CHARS]
    text = "".join(
        f"<U+{ord(ch):04X}>" if _SHOWN_ESCAPED.match(ch) or (ord(ch) < 32 and ch != "\t") else ch
        for ch in text
    )
    prefix = "…" if begin else ""
    suffix = "…" if begin + EXCERPT_CHARS < len(line) else ""
    return (prefix + text.strip() + suffix)[: EXCERPT_CHARS * 2]


Emit = Callable[[str, _Text, int, int], bool]
"""Report (rule, text, line number, offset); False once the rule has reported enough."""


def _simple_rule(
    rule: str, matchers: Sequence[_Rx | _Near], keywords: tuple[str, ...]
) -> Callable[[_Text, Emit], None]:
    """A rule that reports each line matching any of `matchers`. Every matcher needs one of
    `keywords` (lowercase) in the text, so files without any skip the regex passes."""

    def check(text: _Text, emit: Emit) -> None:
        if not any(word in text.folded for word in keywords):
            return
        for number, offset in text.matches(matchers):
            if not emit(rule, text, number, offset):
                return

    return check


_rule_download_exec = _simple_rule(
    DOWNLOAD_EXEC,
    _DOWNLOAD_EXEC,
    (
        "curl",
        "wget",
        "fetch",
        "iwr",
        "irm",
        "invoke-",
        "webclient",
        "urlopen",
        "urllib",
        "requests",
        "httpx",
        "urlretrieve",
    ),
)
_rule_credentials = _simple_rule(
    CREDENTIAL_ACCESS,
    _CREDENTIAL_PATHS,
    (
        ".ssh",
        "id_",
        ".aws/",
        "/etc/",
        ".netrc",
        ".git-credentials",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        ".docker/",
        ".kube/",
        ".env",
    ),
)
_rule_secret_literals = _simple_rule(
    SECRET_LITERAL,
    _SECRET_LITERALS,
    (
        "sk-",
        "akia",
        "asia",
        "gh",
        "github_pat_",
        "xox",
        "aiza",
        "k_live_",
        "lg_live_",
        "private key",
    ),
)
_rule_decode_exec = _simple_rule(
    DECODE_EXEC,
    _DECODE_EXEC,
    ("decode", "fromhex", "unhexlify", "atob", "decompress", "marshal", "base64", "xxd", "assets/"),
)
_rule_prompt_injection = _simple_rule(
    PROMPT_INJECTION,
    _INJECTION,
    (
        "ignore",
        "disregard",
        "forget",
        "override",
        "you are now",
        "from now on",
        "the user",
        "system prompt",
        "system message",
        "instructions",
        "conversation",
        "chat",
        "messages",
        "transcript",
        "<|",
        "inst]",
    ),
)


def _rule_env_exfiltration(text: _Text, emit: Emit) -> None:
    if "env" not in text.folded and "set" not in text.folded:
        return
    reported: set[int] = set()
    sends = text.matches(_NETWORK_SEND)
    upcoming = latest = None  # the next send line not read yet; the last one read
    for number, offset in text.matches(_ENV_DUMP):
        if upcoming is None and latest is None:
            upcoming = next(sends, None)  # read only once there is a dump
        while upcoming is not None and upcoming[0] <= number + EXFIL_WINDOW_LINES:
            latest, upcoming = upcoming, next(sends, None)
        if latest is not None and latest[0] >= number - EXFIL_WINDOW_LINES:
            reported.add(number)
            if not emit(ENV_EXFILTRATION, text, number, offset):
                return
    for number, offset in text.matches(_NETWORK_PIPE):
        if number not in reported and not emit(ENV_EXFILTRATION, text, number, offset):
            return


def _rule_encoded_blobs(text: _Text, emit: Emit) -> None:
    candidates = sorted(
        [
            *_ESCAPED_HEX_BLOB.finditer(text.text),
            *_HEX_BLOB.finditer(text.text),
            *_B64_BLOB.finditer(text.text),
        ],
        key=lambda m: m.start(),
    )
    reported: set[int] = set()
    for candidate in candidates:
        number = text.line_number(candidate.start())
        if number in reported:
            continue
        blob = candidate.group()
        if not blob.startswith("\\x"):
            before = text.text[max(0, candidate.start() - 40) : candidate.start()]
            if _DATA_IMAGE.search(before):
                continue  # an inline image in an HTML or SVG asset
            if not (_LETTER.search(blob) and _DIGIT.search(blob)):
                continue
        reported.add(number)
        if not emit(ENCODED_BLOB, text, number, candidate.start()):
            return


def _rule_hidden_unicode(text: _Text, emit: Emit) -> None:
    position = 0
    while (found := _HIDDEN.search(text.text, position)) is not None:
        offset = found.start()
        if offset == 0 and found.group() == "\ufeff":
            position = 1  # a byte-order mark opening the file
            continue
        number = text.line_number(offset)
        next_line = text.next_line(number)
        if not emit(HIDDEN_UNICODE, text, number, offset) or next_line is None:
            return
        position = next_line


_RULE_FUNCTIONS = (
    _rule_download_exec,
    _rule_credentials,
    _rule_env_exfiltration,
    _rule_secret_literals,
    _rule_encoded_blobs,
    _rule_decode_exec,
    _rule_hidden_unicode,
    _rule_prompt_injection,
)


def scan_text(path: str, text: str) -> list[Finding]:
    """Every finding in one file, at most MAX_FINDINGS_PER_RULE_AND_FILE per rule."""
    source = _Text(text.replace("\x00", "\n"))
    findings: list[Finding] = []
    counts: dict[str, int] = {}

    def emit(rule: str, where: _Text, number: int, offset: int) -> bool:
        count = counts.get(rule, 0)
        if count >= MAX_FINDINGS_PER_RULE_AND_FILE:
            return False
        counts[rule] = count + 1
        line = where.line(number)
        excerpt = _excerpt(line.rstrip("\r"), where.column(number, offset))
        findings.append(_finding(rule, path, number, excerpt))
        return count + 1 < MAX_FINDINGS_PER_RULE_AND_FILE

    for rule in _RULE_FUNCTIONS:
        rule(source, emit)
    return sorted(findings, key=lambda f: (f.line, f.rule))


def _finding(rule: str, path: str, line: int, excerpt: str) -> Finding:
    severity, message = RULES.get(rule) or FILE_RULES[rule]
    return Finding(rule, severity, path, line, excerpt, message)


@dataclass(frozen=True)
class FileKind:
    """What a file is: `text` (decoded), or binary data named `kind` and reported under `rule`
    (None for a known media type)."""

    text: str | None = None
    kind: str = "text"
    rule: str | None = None


_PROGRAMS = (
    (b"\x7fELF", "ELF executable"),
    (b"\xfe\xed\xfa\xce", "Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O universal binary or Java class"),
    (b"MZ", "Windows executable"),
    (b"\x00asm", "WebAssembly module"),
    (b"dex\n", "Android DEX bytecode"),
)
_ARCHIVES = (
    (b"PK\x03\x04", "zip archive (or a zip-based document: docx, xlsx, jar, …)"),
    (b"PK\x05\x06", "zip archive"),
    (b"PK\x07\x08", "zip archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"MSCF", "cabinet archive"),
    (b"!<arch>\n", "ar archive (deb)"),
    (b"\xed\xab\xee\xdb", "RPM package"),
)
_MEDIA = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"BM", "BMP image"),
    (b"\x00\x00\x01\x00", "ICO image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"%PDF-", "PDF document"),
    (b"\x00\x01\x00\x00", "TrueType font"),
    (b"OTTO", "OpenType font"),
    (b"ttcf", "font collection"),
    (b"wOFF", "WOFF font"),
    (b"wOF2", "WOFF2 font"),
    (b"ID3", "MP3 audio"),
    (b"\xff\xfb", "MP3 audio"),
    (b"\xff\xf3", "MP3 audio"),
    (b"\xff\xf2", "MP3 audio"),
    (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"),
    (b"\x1a\x45\xdf\xa3", "Matroska or WebM video"),
)
_RIFF_MEDIA = {b"WEBP": "WebP image", b"WAVE": "WAV audio", b"AVI ": "AVI video"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def classify(content: bytes) -> FileKind:
    """Text or binary, from the bytes alone (names and extensions are the uploader's word).

    Text: UTF-8 with no NUL among the first SNIFF_BYTES, where a few undecodable bytes (at most
    MAX_REPLACED_SHARE of the characters) become U+FFFD, so a script with a stray byte is still
    read; or UTF-16 or UTF-32 with a byte-order mark. Everything else is binary, named by its
    leading bytes.
    """
    nul = b"\x00" in content[:SNIFF_BYTES]
    if not nul:
        try:
            return FileKind(text=content.decode("utf-8"))
        except UnicodeDecodeError:
            text = content.decode("utf-8", "replace")
            if text.count("\ufffd") <= MAX_REPLACED_SHARE * len(text):
                return FileKind(text=text)
    else:
        for bom, codec in _BOMS:
            if content.startswith(bom):
                try:
                    return FileKind(text=content.decode(codec))
                except UnicodeDecodeError:
                    continue
    return _binary_kind(content)


def _binary_kind(content: bytes) -> FileKind:
    for magic, kind in _PROGRAMS:
        if content.startswith(magic):
            return FileKind(kind=kind, rule=BINARY_EXECUTABLE)
    if content[2:4] == b"\r\n" and len(content) >= 16:
        return FileKind(kind="Python bytecode", rule=BINARY_EXECUTABLE)
    if content[:1] == b"\x80" and content[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return FileKind(kind="Python pickle (runs code when loaded)", rule=BINARY_EXECUTABLE)
    for magic, kind in _ARCHIVES:
        if content.startswith(magic):
            return FileKind(kind=kind, rule=ARCHIVE)
    if content[257:262] == b"ustar":
        return FileKind(kind="tar archive", rule=ARCHIVE)
    for magic, kind in _MEDIA:
        if content.startswith(magic):
            return FileKind(kind=kind)
    if content[:4] == b"RIFF" and content[8:12] in _RIFF_MEDIA:
        return FileKind(kind=_RIFF_MEDIA[content[8:12]])
    if content[4:8] == b"ftyp":
        return FileKind(kind="MP4, QuickTime or HEIF media")
    return FileKind(kind="binary data", rule=UNKNOWN_BINARY)


class _Budget:
    """The text left to scan in one package."""

    def __init__(self, chars: int) -> None:
        self.left = chars

    def scan(self, path: str, text: str) -> list[Finding]:
        if len(text) <= self.left:
            self.left -= len(text)
            return scan_text(path, text)
        # Whole lines when one ends within the budget, so no pattern is cut in two.
        cut = text.rfind("\n", 0, self.left) + 1 or self.left
        self.left -= cut
        found = scan_text(path, text[:cut]) if cut else []
        excerpt = f"{len(text) - cut} of {len(text)} characters not scanned"
        line = text.count("\n", 0, cut) + 1
        return [*found, _finding(TOO_LARGE_TO_SCAN, path, line, excerpt)]


def _scan_order(path: str) -> tuple[int, str]:
    """Scripts first, then references, then assets: what runs gets the budget first."""
    root = path.split("/", 1)[0]
    return ({"scripts": 0, "references": 1, "assets": 2}.get(root, 3), path)


def scan_package(*, skill_md: str, files: Mapping[str, bytes]) -> list[Finding]:
    """Findings for SKILL.md (front matter included) and every file, in path order.

    Text is read until the package's budget (MAX_SCANNED_TEXT_CHARS) is spent, SKILL.md first
    and then the files in `_scan_order`; a file it does not reach, or reaches only in part, has
    a `too-large-to-scan` finding. A binary file is never read as text (see `classify`): a
    program, an archive or data of no known media type is a finding of its own (line 0: the
    whole file).
    """
    budget = _Budget(MAX_SCANNED_TEXT_CHARS)
    by_file = {"SKILL.md": budget.scan("SKILL.md", skill_md)}
    count = len(by_file["SKILL.md"])
    for path in sorted(files, key=_scan_order):
        if count >= MAX_FINDINGS:
            break
        content = files[path]
        kind = classify(content)
        if kind.text is not None:
            by_file[path] = budget.scan(path, kind.text)
        elif kind.rule is not None:
            by_file[path] = [_finding(kind.rule, path, 0, f"{kind.kind}, {len(content)} bytes")]
        count += len(by_file.get(path, ()))
    ordered = [f for path in ("SKILL.md", *sorted(files)) for f in by_file.get(path, ())]
    return ordered[:MAX_FINDINGS]
