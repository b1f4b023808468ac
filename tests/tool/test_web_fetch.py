"""The `web_fetch` tool: readable text from a local website, limits, and SSRF refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from lunogen.kit.http import SafeHttp
from lunogen.tool.registry import ToolContext, registry
from lunogen.tool.web_fetch import MAX_CHARS, html_to_text
from tests.fakes.website import FakeDns, LoopbackIsPublic, Website

REFUSED = "web_fetch refused:"
FAILED = "web_fetch failed:"


@pytest.fixture
def site() -> Iterator[Website]:
    with Website.running() as running:
        yield running


@pytest.fixture
def internal(site: Website) -> Iterator[Website]:
    with Website.running(host="127.0.0.2", port=site.port) as running:
        yield running


def context(*, allow_private: bool = False, http: SafeHttp | None = None) -> ToolContext:
    return ToolContext(
        agent_id="agt_1", owner_id="usr_1", allow_private_urls=allow_private, http=http
    )


async def web_fetch(ctx: ToolContext, **args: Any) -> str:
    spec = registry.get("web_fetch")
    assert spec is not None
    return await spec.run(ctx, args)


# --- reading ----------------------------------------------------------------------------------


async def test_html_becomes_title_and_main_text(site: Website) -> None:
    out = await web_fetch(context(allow_private=True), url=site.url("/page.html"))
    assert out.startswith(f"URL: {site.url('/page.html')}\nTitle: The Lunar Garden\n\n")
    assert "# Growing moon flowers" in out
    assert "Moon flowers open at dusk and close by morning." in out
    assert "- Plant in spring\n- Water & wait" in out
    assert "keep\n  this" in out  # <pre> keeps its whitespace
    hidden = ["color: red", "trackingMarker", "module script", "Navigation menu", "Site header"]
    hidden += ["Footer marker", "Enable JavaScript", "<p>", "&amp;"]
    for text in hidden:
        assert text not in out
    assert "  " not in out.replace("keep\n  this", "")


def test_html_without_main_uses_the_body() -> None:
    title, text = html_to_text(
        "<html><head><title>T</title><script>x()</script></head><body>"
        "<div>One</div><div>Two <b>bold</b>\n\n  words</div><table><tr><td>a</td><td>b</td></tr>"
        "</table><footer>f</footer></body></html>"
    )
    assert title == "T"
    assert text == "One\nTwo bold words\n\n| a | b"


async def test_plain_text_and_json_are_returned_as_text(site: Website) -> None:
    ctx = context(allow_private=True)
    plain = await web_fetch(ctx, url=site.url("/plain.txt"))
    assert plain == f"URL: {site.url('/plain.txt')}\n\nJust   plain text.\nSecond line."
    data = await web_fetch(ctx, url=site.url("/data.json"))
    assert data.endswith('{"flower":"moon","hours":[18,6]}')


async def test_binary_content_is_refused(site: Website) -> None:
    out = await web_fetch(context(allow_private=True), url=site.url("/image.png"))
    assert out.startswith(REFUSED)
    assert "image/png" in out
    assert "PNG" not in out


async def test_text_is_capped_with_a_marker(site: Website) -> None:
    ctx = context(allow_private=True)
    out = await web_fetch(ctx, url=site.url("/big?n=50000"), max_chars=1000)
    body = out.split("\n\n", 1)[1]
    assert body.startswith("a" * 1000 + "\n\n[truncated: showing the first 1000 of 50000")
    assert "a" * 1001 not in out
    default = await web_fetch(ctx, url=site.url("/big?n=50000"))
    assert "a" * MAX_CHARS in default and "a" * (MAX_CHARS + 1) not in default
    assert f"showing the first {MAX_CHARS} of 50000 characters" in default
    small = await web_fetch(ctx, url=site.url("/big?n=500"), max_chars=10**9)
    assert small.endswith("a" * 500)
    assert "truncated" not in small


async def test_download_stops_at_the_byte_limit(site: Website) -> None:
    ctx = context(http=SafeHttp(allow_private=True, max_bytes=10_000))
    out = await web_fetch(ctx, url=site.url("/big?n=50000"))
    assert "a" * 10_000 in out and "a" * 10_001 not in out
    assert "download stopped at the limit of 10,000 bytes" in out


async def test_http_errors_and_bad_arguments_come_back_as_text(site: Website) -> None:
    ctx = context(allow_private=True)
    missing = await web_fetch(ctx, url=site.url("/status/404"))
    assert missing.startswith(f"{FAILED} {site.url('/status/404')} answered HTTP 404.")
    assert "status page" in missing
    assert (await web_fetch(ctx)).startswith(FAILED)
    assert (await web_fetch(ctx, url=42)).startswith(FAILED)
    assert (await web_fetch(ctx, url="http://[::1")).startswith(REFUSED)


async def test_time_limit_is_reported(site: Website) -> None:
    ctx = context(http=SafeHttp(allow_private=True, timeout=0.3))
    out = await web_fetch(ctx, url=site.url("/hang"))
    assert out == f"{FAILED} {site.url('/hang')} did not complete within 0.3 seconds."


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/page.html", "loopback"),
        ("http://localhost:{port}/page.html", "loopback"),
        ("http://[::1]:{port}/page.html", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/", "private"),
        ("file:///etc/passwd", "Only http:// and https://"),
        ("ftp://127.0.0.1:{port}/", "Only http:// and https://"),
    ],
)
async def test_private_and_metadata_urls_are_refused(site: Website, url: str, reason: str) -> None:
    out = await web_fetch(context(), url=url.format(port=site.port))
    assert out.startswith(REFUSED)
    assert reason in out
    assert site.requests == []


async def test_metadata_is_refused_even_when_private_urls_are_allowed(site: Website) -> None:
    out = await web_fetch(context(allow_private=True), url="http://169.254.169.254/latest/")
    assert out.startswith(REFUSED)
    assert "cloud metadata" in out


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/page.html",
        "http://internal.example:{port}/page.html",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.2]:{port}/page.html",
    ],
)
async def test_redirects_into_private_or_metadata_addresses_are_refused(
    site: Website, internal: Website, target: str
) -> None:
    dns = FakeDns({"public.example": [["127.0.0.1"]], "internal.example": [["127.0.0.2"]]})
    ctx = context(http=SafeHttp(policy=LoopbackIsPublic(), resolver=dns))
    query = urlencode({"to": target.format(port=site.port)})
    start = f"http://public.example:{site.port}/redirect?{query}"
    allowed = await web_fetch(ctx, url=f"http://public.example:{site.port}/page.html")
    assert "Title: The Lunar Garden" in allowed  # the first hop alone is allowed
    out = await web_fetch(ctx, url=start)
    assert out.startswith(f"{REFUSED} Redirect from {start} refused:")
    assert site.paths() == ["/page.html", "/redirect"]
    assert internal.requests == []


async def test_redirect_from_loopback_is_refused_at_the_first_hop(site: Website) -> None:
    start = site.url("/redirect?" + urlencode({"to": "http://169.254.169.254/"}))
    out = await web_fetch(context(), url=start)
    assert out.startswith(REFUSED)
    assert site.requests == []
