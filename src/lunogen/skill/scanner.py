"""A static scanner for skill packages: pure functions over text, no I/O.

Each rule reports findings `{rule, severity, file, line, excerpt, message}`. Any finding leaves
the skill `flagged` until its owner approves that version. The rules aim at what a hostile or
compromised skill does to an agent: fetch and run code, send credentials away, hide a payload,
hide text from the reviewer, or talk the model out of its instructions. Patterns use bounded
repetition so a hostile file cannot make a scan slow.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

EXCERPT_CHARS = 120
MAX_FINDINGS_PER_RULE_AND_FILE = 10
MAX_FINDINGS = 200
BLOB_MIN_CHARS = 200
EXFIL_WINDOW_LINES = 5

DOWNLOAD_EXEC = "download-exec"
CREDENTIAL_ACCESS = "credential-access"
ENV_EXFILTRATION = "env-exfiltration"
SECRET_LITERAL = "secret-literal"
ENCODED_BLOB = "encoded-blob"
DECODE_EXEC = "decode-exec"
HIDDEN_UNICODE = "hidden-unicode"
PROMPT_INJECTION = "prompt-injection"

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


def _i(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_SHELLS = r"(?:sudo\s+(?:-\S+\s+)*)?(?:ba|z|da|k|fi)?sh|python[0-9.]*|perl|ruby|node|php"
_FETCH = r"(?:curl|wget|fetch)\b"
_DOWNLOAD_EXEC = [
    _i(rf"{_FETCH}[^\n|;]{{0,300}}\|\s*(?:{_SHELLS})\b"),
    _i(rf"(?:{_SHELLS})\s+(?:-s\s+)?<\(\s*{_FETCH}"),
    _i(rf"(?:(?:ba|z)?sh\s+-c|eval)\s+[\"']?\$\(\s*{_FETCH}"),
    _i(
        r"\b(?:iex|invoke-expression)\b[\s(]{0,5}(?:\(\s*)?(?:iwr|irm|invoke-webrequest|"
        r"invoke-restmethod|new-object\s+(?:system\.)?net\.webclient)"
    ),
    _i(
        r"\b(?:iwr|irm|invoke-webrequest|invoke-restmethod)\b[^\n|]{0,300}\|\s*(?:iex|invoke-expression)\b"
    ),
    _i(
        r"\b(?:exec|eval)\s*\([^\n]{0,200}?(?:urlopen|urllib\.request|requests\.get|httpx\.get|urlretrieve)"
    ),
    _i(r"python[0-9.]*\s+-c\s+[^\n]{0,300}?(?:urllib|urlopen|requests)[^\n]{0,300}?\bexec\s*\("),
]

_CREDENTIAL_PATHS = [
    _i(r"(?:~|\$home|\$\{home\}|/home/[^/\s]{1,64}|/root|expanduser\([\"']~)/?\.ssh\b"),
    _i(r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b(?!\.pub)"),
    _i(r"\.aws/(?:credentials|config)\b"),
    _i(r"/etc/(?:shadow|gshadow|sudoers)\b"),
    _i(r"(?:~|\$home)/\.(?:netrc|git-credentials|pgpass|npmrc|pypirc)\b"),
    _i(r"\.(?:docker/config\.json|kube/config)\b"),
    _i(
        r"(?:\bcat|\bless|\bhead|\btail|\bsource|\bcp|\bscp|\bopen|read_text|read_bytes|"
        r"readfile(?:sync)?|load_dotenv|dotenv_values)\b[^\n]{0,40}?[\"'(\s/]\.env\b(?![.\w])"
    ),
]

_ENV_DUMP = [
    re.compile(
        r"(?:^|[|;&`(]|\$\()[ \t]*(?:printenv|env|set|export[ \t]+-p)[ \t]*(?:$|[|>;&)`])",
        re.IGNORECASE | re.MULTILINE,
    ),
    re.compile(
        r"(?:dict|str|repr|json\.dumps|list)\(\s*os\.environ\b|os\.environ(?:\.copy\(\)|\.items\(\))|"
        r"\*\*os\.environ|JSON\.stringify\(\s*process\.env\b|Object\.(?:entries|keys)\(\s*process\.env\b"
    ),
    _i(r"\bget-childitem\s+env:|\bgci\s+env:|\bls\s+env:"),
]
_NETWORK_SEND = [
    re.compile(
        r"\bcurl\b[^\n]{0,300}?[ \t]-(?:d|-data|F\b|-form|T\b|-upload-file|X[ \t]*(?:POST|PUT)|"
        r"-request[ \t]+(?:POST|PUT))"
    ),
    _i(r"\bwget\b[^\n]{0,300}?--post-(?:data|file)"),
    _i(r"\b(?:requests|httpx|session|client)\.(?:post|put|patch)\s*\("),
    _i(r"\burlopen\s*\([^\n]{0,200}?data\s*="),
    re.compile(r"(?:^|[|;&\s])(?:nc|ncat|netcat|socat)[ \t]+[^\n]{0,100}?\d", re.MULTILINE),
    _i(r"/dev/(?:tcp|udp)/"),
    _i(r"\bfetch\s*\([^\n]{0,300}?method\s*:\s*[\"'](?:post|put)"),
    _i(r"\binvoke-(?:webrequest|restmethod)\b[^\n]{0,300}?-method\s+(?:post|put)"),
    _i(r"\bsocket\.(?:socket|create_connection)\b"),
]
_NETWORK_PIPE = _i(r"(?:printenv|\benv\b)\s*\|[^\n]{0,200}?(?:curl|wget|nc|ncat|netcat|socat)\b")

_SECRET_LITERALS = [
    re.compile(r"\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{32,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{50,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    re.compile(r"\b[sr]k_live_[0-9A-Za-z]{20,}"),
    re.compile(r"\blg_live_[0-9a-f]{64}\b"),
    re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----"),
]

_HEX_BLOB = re.compile(rf"(?:\\x)?[0-9a-fA-F]{{{BLOB_MIN_CHARS},}}")
_ESCAPED_HEX_BLOB = re.compile(rf"(?:\\x[0-9a-fA-F]{{2}}){{{BLOB_MIN_CHARS // 2},}}")
_B64_BLOB = re.compile(rf"[A-Za-z0-9+/_\-]{{{BLOB_MIN_CHARS},}}={{0,2}}")
_DATA_IMAGE = re.compile(r"data:image/[a-z0-9.+\-]{1,20};base64,$", re.IGNORECASE)

_DECODERS = (
    r"b64decode|b32decode|a85decode|decodebytes|codecs\.decode|bytes\.fromhex|unhexlify|"
    r"atob\s*\(|zlib\.decompress|gzip\.decompress|lzma\.decompress|marshal\.loads|"
    r"Buffer\.from\([^\n)]{0,200}?[\"'](?:base64|hex)[\"']|FromBase64String"
)
_DECODE_EXEC = [
    re.compile(
        rf"\b(?:exec|eval|compile|Function|execSync|system|popen|iex|Invoke-Expression)\s*\("
        rf"[^\n]{{0,300}}?(?:{_DECODERS})",
        re.IGNORECASE,
    ),
    _i(
        rf"(?:base64|openssl\s+(?:base64|enc))\s+(?:-\w+\s+)*(?:-d|--decode|-D)\b[^\n|]{{0,200}}\|\s*(?:{_SHELLS})\b"
    ),
    _i(rf"\bxxd\s+-r\b[^\n|]{{0,200}}\|\s*(?:{_SHELLS})\b"),
    _i(rf"\|\s*(?:base64\s+(?:-d|--decode|-D)|xxd\s+-r)\b[^\n|]{{0,100}}\|\s*(?:{_SHELLS})\b"),
]

_BIDI = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_ZERO_WIDTH = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF}
_TAGS = range(0xE0000, 0xE0080)
_HIDDEN = re.compile("[\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff\U000e0000-\U000e007f]")

_INJECTION = [
    _i(
        r"\bignore\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+)?"
        r"(?:previous|prior|above|earlier|preceding|former|system|original)\s+"
        r"(?:instructions?|prompts?|messages?|rules|directions|directives|context|guidelines)"
    ),
    _i(
        r"\bdisregard\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+)?"
        r"(?:previous\s+|prior\s+|above\s+|earlier\s+|system\s+|original\s+)"
        r"(?:instructions?|prompts?|messages?|rules|directions|guidelines)"
    ),
    _i(r"\bdisregard\s+(?:the\s+|your\s+)?system\s+prompt"),
    _i(
        r"\bforget\s+(?:all\s+|everything\s+(?:in\s+)?)?(?:your|the|previous|prior)\s+"
        r"(?:previous\s+|prior\s+)?(?:instructions|rules|prompt|guidelines)"
    ),
    _i(r"\boverride\s+(?:the\s+|your\s+)(?:system\s+prompt|instructions|safety|guidelines)"),
    _i(
        r"\byou\s+are\s+now\s+(?:dan\b|no\s+longer\b|free\s+(?:from|of)\b|unrestricted|jailbroken|"
        r"in\s+(?:developer|god|dan)\s+mode|an?\s+(?:unrestricted|unfiltered|uncensored|"
        r"different|new|evil)\s+(?:ai|assistant|model|agent))"
    ),
    _i(
        r"\bfrom\s+now\s+on,?\s+you\s+(?:will\s+|must\s+|shall\s+)?(?:ignore|disregard|no\s+longer)"
    ),
    _i(
        r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|notify|alert|mention\s+(?:this\s+|it\s+)?to|"
        r"reveal\s+(?:this\s+|it\s+)?to|let)\s+the\s+user\b"
    ),
    _i(r"\bwithout\s+(?:telling|informing|notifying|alerting|asking)\s+the\s+user\b"),
    _i(r"\b(?:keep|hide)\s+(?:this|it|these\s+\w+)\s+(?:secret\s+|hidden\s+)?from\s+the\s+user\b"),
    _i(
        r"\b(?:reveal|print|show|output|repeat|leak|dump|disclose|display)\s+(?:me\s+)?"
        r"(?:your|the)\s+(?:full\s+|entire\s+|original\s+|complete\s+|hidden\s+)?"
        r"(?:system\s+prompt|system\s+message|hidden\s+instructions|initial\s+instructions)"
    ),
    _i(
        r"\b(?:send|post|upload|forward|exfiltrate|transmit|copy|leak)\s+"
        r"(?:(?:the|this|all|entire|full|whole|of|user'?s?|previous)\s+){0,4}"
        r"(?:conversation|chat\s+(?:history|log|transcript)|message\s+history|messages|transcript)"
        r"(?:\s+\w+){0,3}\s+(?:to|at|via)\s+(?:https?://|\S+@|[\w.-]+\.\w{2,}|a\s+|an\s+|the\s+|my\s+)"
    ),
    _i(r"<\|im_start\|>\s*system|<\|system\|>|\[/?INST\]"),
]


def _excerpt(line: str, start: int = 0) -> str:
    begin = max(0, start - 20)
    text = line[begin : begin + EXCERPT_CHARS]
    text = "".join(
        f"<U+{ord(ch):04X}>" if _HIDDEN.match(ch) or (ord(ch) < 32 and ch != "\t") else ch
        for ch in text
    )
    prefix = "…" if begin else ""
    suffix = "…" if begin + EXCERPT_CHARS < len(line) else ""
    return (prefix + text.strip() + suffix)[: EXCERPT_CHARS * 2]


class _Text:
    """A file's text with line lookup: each pattern runs once over the whole text (fast),
    and matches are mapped back to line numbers."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lowered = text.lower()
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def line_number(self, offset: int) -> int:
        return bisect_right(self.starts, offset)

    def line(self, number: int) -> str:
        start = self.starts[number - 1]
        end = self.text.find("\n", start)
        return self.text[start : end if end >= 0 else len(self.text)]

    def column(self, number: int, offset: int) -> int:
        return offset - self.starts[number - 1]

    def matches(self, patterns: list[re.Pattern[str]]) -> Iterator[tuple[int, int]]:
        """(line number, offset) of the first match of any pattern on each line, in order."""
        first: dict[int, int] = {}
        for pattern in patterns:
            for found in pattern.finditer(self.text):
                number = self.line_number(found.start())
                if number not in first or found.start() < first[number]:
                    first[number] = found.start()
        yield from sorted(first.items())


Emit = Callable[[str, _Text, int, int], None]


def _simple_rule(
    rule: str, patterns: list[re.Pattern[str]], keywords: tuple[str, ...]
) -> Callable[[_Text, Emit], None]:
    """A rule that reports each line matching any of `patterns`. Every pattern needs one of
    `keywords` (lowercase) in the text, so files without any skip the regex passes."""

    def check(text: _Text, emit: Emit) -> None:
        if not any(word in text.lowered for word in keywords):
            return
        for number, offset in text.matches(patterns):
            emit(rule, text, number, offset)

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
    ("decode", "fromhex", "unhexlify", "atob", "decompress", "marshal", "base64", "xxd"),
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
    if "env" not in text.lowered and "set" not in text.lowered:
        return
    reported: set[int] = set()
    dumps = list(text.matches(_ENV_DUMP))
    if dumps:
        sends = [number for number, _ in text.matches(_NETWORK_SEND)]
        for number, offset in dumps:
            if any(abs(number - send) <= EXFIL_WINDOW_LINES for send in sends):
                reported.add(number)
                emit(ENV_EXFILTRATION, text, number, offset)
    for number, offset in text.matches([_NETWORK_PIPE]):
        if number not in reported:
            emit(ENV_EXFILTRATION, text, number, offset)


def _has_letters_and_digits(text: str) -> bool:
    return any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


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
        if not candidate.group().startswith("\\x"):
            before = text.text[max(0, candidate.start() - 40) : candidate.start()]
            if _DATA_IMAGE.search(before):
                continue  # an inline image in an HTML or SVG asset
            if not _has_letters_and_digits(candidate.group()):
                continue
        reported.add(number)
        emit(ENCODED_BLOB, text, number, candidate.start())


def _rule_hidden_unicode(text: _Text, emit: Emit) -> None:
    reported: set[int] = set()
    for found in _HIDDEN.finditer(text.text):
        code = ord(found.group())
        offset = found.start()
        if code == 0xFEFF and offset == 0:
            continue  # a byte-order mark opening the file
        if code == 0x200D and offset > 0 and _is_emoji(text.text[offset - 1]):
            continue  # joins an emoji sequence
        number = text.line_number(offset)
        if number not in reported:
            reported.add(number)
            emit(HIDDEN_UNICODE, text, number, offset)


def _is_emoji(ch: str) -> bool:
    code = ord(ch)
    return code >= 0x1F000 or 0x2600 <= code <= 0x27BF or code == 0xFE0F


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


def scan_text(path: str, text: str, *, binary: bool = False) -> list[Finding]:
    """Every finding in one file, at most MAX_FINDINGS_PER_RULE_AND_FILE per rule.

    `binary`: the file is not valid UTF-8 (decoded with replacement characters); the hidden
    Unicode rule is skipped there, since random bytes form such characters by chance.
    """
    source = _Text(text.replace("\x00", "\n"))
    findings: list[Finding] = []
    counts: dict[str, int] = {}

    def emit(rule: str, where: _Text, number: int, offset: int) -> None:
        if counts.get(rule, 0) >= MAX_FINDINGS_PER_RULE_AND_FILE:
            return
        counts[rule] = counts.get(rule, 0) + 1
        severity, message = RULES[rule]
        line = where.line(number)
        findings.append(
            Finding(
                rule=rule,
                severity=severity,
                file=path,
                line=number,
                excerpt=_excerpt(line.rstrip("\r"), where.column(number, offset)),
                message=message,
            )
        )

    for rule in _RULE_FUNCTIONS:
        if binary and rule is _rule_hidden_unicode:
            continue
        rule(source, emit)
    return sorted(findings, key=lambda f: (f.line, f.rule))


def scan_package(*, skill_md: str, files: Mapping[str, bytes]) -> list[Finding]:
    """Findings for SKILL.md (front matter included) and every file, in path order.

    Files that are not UTF-8 are scanned too (a script with one stray byte must not slip
    through), decoded with replacement characters.
    """
    findings = scan_text("SKILL.md", skill_md)
    for path in sorted(files):
        content = files[path]
        try:
            findings.extend(scan_text(path, content.decode("utf-8")))
        except UnicodeDecodeError:
            findings.extend(scan_text(path, content.decode("utf-8", "replace"), binary=True))
        if len(findings) >= MAX_FINDINGS:
            break
    return findings[:MAX_FINDINGS]
