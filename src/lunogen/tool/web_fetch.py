"""The `web_fetch` built-in: GET a public http(s) URL and return its readable text.

Requests go through the context's `kit.http.SafeHttp` (SSRF guard, redirects re-checked, its size
and time limits: 2 MB and 15 s by default).
HTML is reduced to its title and main text; plain text and JSON are returned as they are; other
content types are refused before their body is read. The tool never raises: refusals and
failures come back as a string starting with "web_fetch refused:" or "web_fetch failed:".
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import structlog

from lunogen.kit.http import FetchError, FetchResult, UnsafeUrlError
from lunogen.tool.registry import ToolContext, ToolSpec, registry

log = structlog.get_logger(__name__)

MAX_CHARS = 20_000
MIN_CHARS = 200
ERROR_BODY_CHARS = 500

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset(
    {"application/json", "application/ld+json", "application/xml", "application/javascript"}
)

# Elements whose content is not part of the readable text (all have end tags).
_SKIPPED = frozenset(
    {
        "script", "style", "noscript", "template", "svg", "math", "nav", "header", "footer",
        "aside", "form", "button", "select", "textarea", "iframe", "object", "canvas", "dialog",
    }
)  # fmt: skip
# Elements set apart by a blank line, and elements that start a new line.
_PARAGRAPHS = frozenset(
    {
        "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote", "pre",
        "figure", "section", "article", "main", "details", "address", "hr",
    }
)  # fmt: skip
_LINES = frozenset({"li", "tr", "div", "br", "dt", "dd", "figcaption", "summary"})
_HEADINGS = {f"h{n}": "#" * n for n in range(1, 7)}
_PRE_SPACE = "\x01"  # a space inside <pre>, kept through whitespace collapsing
_LINE = "\x02"  # a line break between elements (runs of breaks merge)
_PARAGRAPH = "\x03"  # a blank line between elements
_MARKERS = re.compile("[\x01\x02\x03]")
_BREAKS = re.compile("[ \t]*[\x02\x03][\x02\x03 \t]*")


class _Readable(HTMLParser):
    """Collects the title and the visible text, preferring <main>/<article> when present."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.parts: list[str] = []
        self.main_parts: list[str] = []
        self._skip = 0
        self._in_title = False
        self._in_pre = 0
        self._in_main = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("main", "article"):
            self._in_main += 1
        elif tag == "pre":
            self._in_pre += 1
        if tag in _PARAGRAPHS:
            self._emit(_PARAGRAPH)
        elif tag in _LINES:
            self._emit(_LINE)
        if tag in _HEADINGS:
            self._emit(_HEADINGS[tag] + " ")
        elif tag == "li":
            self._emit("- ")
        elif tag in ("td", "th"):
            self._emit(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in ("main", "article"):
            self._in_main = max(0, self._in_main - 1)
        elif tag == "pre":
            self._in_pre = max(0, self._in_pre - 1)
        if tag in _PARAGRAPHS:
            self._emit(_PARAGRAPH)
        elif tag in _LINES:
            self._emit(_LINE)

    def handle_data(self, data: str) -> None:
        data = _MARKERS.sub("", data)
        if self._in_title:
            self.title.append(data)
        elif self._in_pre:
            self._emit(data.replace("\t", "    ").replace(" ", _PRE_SPACE))
        else:
            self._emit(re.sub(r"\s+", " ", data))

    def _emit(self, text: str) -> None:
        if self._skip:
            return
        self.parts.append(text)
        if self._in_main:
            self.main_parts.append(text)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, readable text) of an HTML document; whitespace collapsed except inside <pre>."""
    parser = _Readable()
    parser.feed(html)
    parser.close()
    title = " ".join("".join(parser.title).split())
    main = "".join(parser.main_parts)
    return title, _tidy(main if main.strip() else "".join(parser.parts))


def _tidy(text: str) -> str:
    text = _BREAKS.sub(lambda m: "\n\n" if _PARAGRAPH in m.group() else "\n", text)
    lines = (re.sub(r"[ \t]+", " ", line).strip(" \t") for line in text.split("\n"))
    text = "\n".join(lines).replace(_PRE_SPACE, " ")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _kind(result: FetchResult) -> str | None:
    """ "html", "text", or None for content web_fetch cannot read."""
    content_type = result.content_type
    if content_type in HTML_TYPES:
        return "html"
    if content_type.startswith("text/") or content_type in TEXT_TYPES:
        return "text"
    if content_type.endswith(("+json", "+xml")):
        return "text"
    if not content_type:
        head = result.content[:1024]
        if b"\x00" in head:
            return None
        return "html" if re.match(rb"\s*<(!doctype html|html)", head, re.I) else "text"
    return None


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        text[:limit].rstrip()
        + f"\n\n[truncated: showing the first {limit} of {len(text)} characters]"
    )


def _read_args(args: dict[str, Any]) -> tuple[str, int] | str:
    url = args.get("url")
    if not isinstance(url, str) or not url.strip():
        return "web_fetch failed: the argument `url` (an http:// or https:// URL) is required."
    raw = args.get("max_chars", MAX_CHARS)
    if not isinstance(raw, int) or isinstance(raw, bool):
        raw = MAX_CHARS
    return url.strip(), max(MIN_CHARS, min(MAX_CHARS, raw))


def _status_line(result: FetchResult) -> str:
    return f"web_fetch failed: {result.url} answered HTTP {result.status_code}."


async def fetch_readable(context: ToolContext, args: dict[str, Any]) -> str:
    parsed = _read_args(args)
    if isinstance(parsed, str):
        return parsed
    url, max_chars = parsed
    http = context.safe_http()
    try:
        async with http.open(
            "GET",
            url,
            headers={"Accept": "text/html,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.1"},
            follow_redirects=True,
        ) as opened:
            probe = FetchResult(
                url=opened.url,
                status_code=opened.status_code,
                headers=opened.headers,
                content=b"",
                truncated=False,
                address=opened.address,
            )
            if opened.status_code < 400 and probe.content_type and _kind(probe) is None:
                return (
                    f"web_fetch refused: {opened.url} is {probe.content_type}, which web_fetch "
                    "cannot read; it reads HTML, plain text and JSON."
                )
            body, truncated = await opened.read(http.max_bytes)
            result = FetchResult(
                url=opened.url,
                status_code=opened.status_code,
                headers=opened.headers,
                content=body,
                truncated=truncated,
                address=opened.address,
                redirects=opened.redirects,
            )
    except UnsafeUrlError as exc:
        return f"web_fetch refused: {exc}"
    except FetchError as exc:
        return f"web_fetch failed: {exc}"
    except Exception:  # the model gets a reason, the log gets the traceback
        log.exception("web_fetch.unexpected_error", url=url)
        return "web_fetch failed: an unexpected error occurred while fetching the URL."
    return _render(result, max_chars, http.max_bytes)


def _render(result: FetchResult, max_chars: int, max_bytes: int) -> str:
    kind = _kind(result)
    if result.status_code >= 400:
        excerpt = result.text()[:ERROR_BODY_CHARS].strip() if kind else ""
        if kind == "html":
            excerpt = html_to_text(result.text())[1][:ERROR_BODY_CHARS]
        return _status_line(result) + (f"\n\n{excerpt}" if excerpt else "")
    if kind is None:
        return (
            "web_fetch refused: the content is binary; web_fetch reads HTML, plain text and JSON."
        )
    header = [f"URL: {result.url}"]
    if kind == "html":
        title, text = html_to_text(result.text())
        if title:
            header.append(f"Title: {title}")
    else:
        text = result.text().strip()
    text = _cap(text, max_chars)
    if result.truncated:
        text += f"\n\n[truncated: the download stopped at the limit of {max_bytes:,} bytes]"
    return "\n".join(header) + "\n\n" + text


web_fetch = registry.register(
    ToolSpec(
        name="web_fetch",
        description=(
            "Fetch a public web page or file by URL (http or https GET) and return its readable "
            "text: the title and main text of HTML pages, plain text and JSON as they are. "
            "Private, local and cloud-metadata addresses are refused."
        ),
        parameters={
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The http:// or https:// URL to fetch."},
                "max_chars": {
                    "type": "integer",
                    "minimum": MIN_CHARS,
                    "maximum": MAX_CHARS,
                    "description": f"Most characters of text to return (default {MAX_CHARS}).",
                },
            },
            "required": ["url"],
            "additionalProperties": False,
        },
        run=fetch_readable,
        tags=("builtin", "network"),
    )
)
