"""The SSRF guard for outbound HTTP (kit/http.py): address rules, URL rules, pinning, redirects.

Only loopback is ever contacted. Where a test needs a "public" first hop, `LoopbackIsPublic`
treats 127.0.0.1 (the fake website) as public and applies the production rules to every other
address, so 127.0.0.2 plays the internal host that must never be reached.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lunogen.config import Settings
from lunogen.kit.http import AddressPolicy, FetchError, SafeHttp, UnsafeUrlError, parse_url
from tests.fakes.website import FakeDns, LoopbackIsPublic, Website


@pytest.fixture
def site() -> Iterator[Website]:
    with Website.running() as running:
        yield running


@pytest.fixture
def internal(site: Website) -> Iterator[Website]:
    """A second site on 127.0.0.2, same port: the internal host that must stay unreachable."""
    with Website.running(host="127.0.0.2", port=site.port) as running:
        yield running


def redirect_to(site: Website, target: str, status: int = 302) -> str:
    return site.url("/redirect?" + urlencode({"to": target, "status": status}))


# --- address rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("2002:a9fe:a9fe::", "metadata"),  # 6to4 wrapping 169.254.169.254
        ("64:ff9b::a00:1", "private"),  # NAT64 wrapping 10.0.0.1
        ("::7f00:1", "reserved"),  # IPv4-compatible ::127.0.0.1
        ("2001::1", "private"),  # Teredo
        ("192.0.2.10", "private"),  # documentation
        ("198.18.0.1", "private"),  # benchmarking
    ],
)
def test_refuses_addresses_that_are_not_public(address: str, reason: str) -> None:
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "93.184.216.34",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ],
)
def test_allows_public_addresses(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None
    assert AddressPolicy(allow_private=True).refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "10.0.0.1", "172.20.1.1", "192.168.0.10", "100.64.1.1", "fd00::1"],
)
def test_allow_private_opens_loopback_and_private_networks(address: str) -> None:
    assert AddressPolicy(allow_private=True).refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",
        "169.254.10.10",
        "fe80::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
    ],
)
def test_allow_private_still_refuses_metadata_link_local_and_unspecified(address: str) -> None:
    assert AddressPolicy(allow_private=True).refusal(ipaddress.ip_address(address)) is not None


def test_from_settings_follows_allow_private_urls() -> None:
    assert SafeHttp.from_settings(Settings(allow_private_urls=True)).address_policy.allow_private
    assert not SafeHttp.from_settings(Settings()).address_policy.allow_private


# --- URL rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "Only http:// and https://"),
        ("ftp://example.com/file", "Only http:// and https://"),
        ("gopher://example.com:70/_stats", "Only http:// and https://"),
        ("javascript:alert(1)", "Only http:// and https://"),
        ("data:text/plain,hello", "Only http:// and https://"),
        ("example.com/page", "Only http:// and https://"),
        ("http://user:secret@example.com/", "user name or password"),
        ("http://user@example.com/", "user name or password"),
        ("http:///no-host", "has no host"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://example.com:25/", "Port 25"),
        ("http://example.com:6667/", "Port 6667"),
        ("http://example.com:99999/", "out of range"),
    ],
)
def test_parse_url_refuses(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrlError) as caught:
        parse_url(url)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "url", ["https://example.com:8443/x?y=1", "http://example.com/", "http://[2606:4700::1111]/"]
)
def test_parse_url_accepts_http_urls_on_ordinary_ports(url: str) -> None:
    assert str(parse_url(url)) == url


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://x/"])
async def test_send_refuses_other_schemes(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        await SafeHttp(allow_private=True).send("GET", url)


# --- resolution -------------------------------------------------------------------------------


async def test_localhost_is_refused_before_any_connection(site: Website) -> None:
    with pytest.raises(UnsafeUrlError) as caught:
        await SafeHttp().send("GET", f"http://localhost:{site.port}/echo")
    assert "localhost resolves to 127.0.0.1" in str(caught.value)
    assert "loopback" in str(caught.value)
    assert site.requests == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1"]
)
async def test_loopback_spellings_are_refused(site: Website, host: str) -> None:
    with pytest.raises(UnsafeUrlError):
        await SafeHttp().send("GET", f"http://{host}:{site.port}/echo")
    assert site.requests == []


async def test_name_resolving_to_a_private_address_is_refused() -> None:
    dns = FakeDns({"intranet.example": [["10.0.0.5"]]})
    with pytest.raises(UnsafeUrlError) as caught:
        await SafeHttp(resolver=dns).send("GET", "http://intranet.example/admin")
    assert "intranet.example resolves to 10.0.0.5" in str(caught.value)
    assert "private" in str(caught.value)


async def test_every_resolved_address_is_checked() -> None:
    dns = FakeDns({"mixed.example": [["93.184.216.34", "10.0.0.5"]]})
    with pytest.raises(UnsafeUrlError) as caught:
        await SafeHttp(resolver=dns).send("GET", "http://mixed.example/")
    assert "10.0.0.5" in str(caught.value)


async def test_unknown_host_is_a_fetch_error() -> None:
    with pytest.raises(FetchError) as caught:
        await SafeHttp(resolver=FakeDns({})).send("GET", "http://nowhere.example/")
    assert not isinstance(caught.value, UnsafeUrlError)
    assert "Could not resolve the host 'nowhere.example'" in str(caught.value)


async def test_connection_is_pinned_to_the_checked_address(
    site: Website, internal: Website
) -> None:
    """DNS rebinding: the name resolves to the "public" site once, then to the internal host."""
    dns = FakeDns({"rebind.example": [["127.0.0.1"], ["127.0.0.2"]]})
    http = SafeHttp(policy=LoopbackIsPublic(), resolver=dns)
    result = await http.send("GET", f"http://rebind.example:{site.port}/echo")
    assert result.status_code == 200
    assert result.address == "127.0.0.1"
    assert result.url == f"http://rebind.example:{site.port}/echo"
    assert dns.calls == ["rebind.example"]  # resolved once; httpx never resolved it again
    assert [seen.host for seen in site.requests] == [f"rebind.example:{site.port}"]
    assert internal.requests == []
    # The next request resolves again, gets the internal address, and is refused.
    with pytest.raises(UnsafeUrlError):
        await http.send("GET", f"http://rebind.example:{site.port}/echo")
    assert internal.requests == []


async def test_next_address_is_tried_when_the_first_does_not_connect(site: Website) -> None:
    dns = FakeDns({"two.example": [["::1", "127.0.0.1"]]})  # the site listens on IPv4 only
    result = await SafeHttp(allow_private=True, resolver=dns).send(
        "GET", f"http://two.example:{site.port}/echo"
    )
    assert result.address == "127.0.0.1"
    assert result.status_code == 200


# --- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/echo",
        "http://internal.example:{port}/echo",
        "http://localhost:{port}/echo",
        "http://[::1]:{port}/echo",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
        "http://user:pw@public.example:{port}/echo",
    ],
)
async def test_redirect_into_a_refused_address_is_refused(
    site: Website, internal: Website, target: str
) -> None:
    dns = FakeDns(
        {
            "public.example": [["127.0.0.1"]],
            "internal.example": [["127.0.0.2"]],
            "localhost": [["127.0.0.2"]],
        }
    )
    http = SafeHttp(policy=LoopbackIsPublic(), resolver=dns)
    first = redirect_to(site, target.format(port=site.port)).replace(
        "127.0.0.1", "public.example", 1
    )
    with pytest.raises(UnsafeUrlError) as caught:
        await http.fetch_text(first)
    assert "Redirect from http://public.example" in str(caught.value)
    assert site.paths() == ["/redirect"]
    assert internal.requests == []


async def test_redirect_to_metadata_is_refused_even_when_private_is_allowed(site: Website) -> None:
    target = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    with pytest.raises(UnsafeUrlError) as caught:
        await SafeHttp(allow_private=True).fetch_text(redirect_to(site, target))
    assert "cloud metadata" in str(caught.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_allowed_redirects_are_followed(site: Website, status: int) -> None:
    first = redirect_to(site, "/plain.txt", status)
    result = await SafeHttp(allow_private=True).fetch_text(first)
    assert result.status_code == 200
    assert result.text().startswith("Just")
    assert result.url == site.url("/plain.txt")
    assert result.redirects == (first,)


async def test_redirects_are_not_followed_unless_asked(site: Website) -> None:
    result = await SafeHttp(allow_private=True).send("POST", redirect_to(site, "/echo"))
    assert result.status_code == 302
    assert result.headers["location"] == "/echo"
    assert site.paths() == ["/redirect"]


@pytest.mark.parametrize(("status", "method", "body"), [(307, "POST", "{}"), (303, "GET", "")])
async def test_post_redirects_keep_or_drop_the_body(
    site: Website, status: int, method: str, body: str
) -> None:
    result = await SafeHttp(allow_private=True).send(
        "POST",
        redirect_to(site, "/echo", status),
        headers={"Content-Type": "application/json"},
        content=b"{}",
        follow_redirects=True,
    )
    echoed = result.content.decode()
    assert f'"method":"{method}"' in echoed
    assert f'"body":"{body}"' in echoed


async def test_credentials_are_dropped_on_a_cross_origin_redirect(site: Website) -> None:
    dns = FakeDns({"other.example": [["127.0.0.1"]]})
    http = SafeHttp(allow_private=True, resolver=dns)
    headers = {"Authorization": "Bearer secret"}
    same = await http.send(
        "GET", redirect_to(site, "/echo"), headers=headers, follow_redirects=True
    )
    assert '"authorization":"Bearer secret"' in same.content.decode()
    other = f"http://other.example:{site.port}/echo"
    cross = await http.send("GET", redirect_to(site, other), headers=headers, follow_redirects=True)
    assert '"authorization":null' in cross.content.decode()
    assert site.requests[-1].host == f"other.example:{site.port}"


async def test_redirect_chains_are_bounded(site: Website) -> None:
    chain = "/echo"
    for _ in range(3):
        chain = "/redirect?" + urlencode({"to": chain})
    with pytest.raises(FetchError) as caught:
        await SafeHttp(allow_private=True, max_redirects=2).fetch_text(site.url(chain))
    assert "Too many redirects (more than 2)" in str(caught.value)
    result = await SafeHttp(allow_private=True, max_redirects=3).fetch_text(site.url(chain))
    assert result.status_code == 200
    assert len(result.redirects) == 3


# --- limits and requests ----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "truncated"), [(1000, False), (1001, True), (300_000, True)])
async def test_body_is_cut_at_max_bytes(site: Website, size: int, truncated: bool) -> None:
    result = await SafeHttp(allow_private=True).send(
        "GET", site.url(f"/big?n={size}"), max_bytes=1000
    )
    assert len(result.content) == min(size, 1000)
    assert result.truncated is truncated


@pytest.mark.parametrize("path", ["/hang", "/hang-body"])
async def test_time_limit_covers_headers_and_body(site: Website, path: str) -> None:
    with pytest.raises(FetchError) as caught:
        await SafeHttp(allow_private=True).send("GET", site.url(path), timeout=0.3)
    assert "did not complete within 0.3 seconds" in str(caught.value)


async def test_closed_port_is_a_fetch_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError) as caught:
        await SafeHttp(allow_private=True).send("GET", f"http://127.0.0.1:{port}/")
    assert "could not connect" in str(caught.value)


async def test_post_with_headers_and_body(site: Website) -> None:
    result = await SafeHttp(allow_private=True).send(
        "POST",
        site.url("/echo"),
        headers={"Content-Type": "application/json", "webhook-id": "msg_1"},
        content=b'{"text":"hi"}',
    )
    assert result.status_code == 200
    seen = site.requests[-1]
    assert (seen.method, seen.body) == ("POST", b'{"text":"hi"}')
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("LunoGen/")


# --- TLS: the certificate is checked against the name, not the pinned IP ----------------------


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def test_tls_verifies_the_certificate_against_the_host_name(tmp_path: Path) -> None:
    certfile, keyfile = _certificate(tmp_path, "secure.example")
    trust = ssl.create_default_context(cafile=str(certfile))
    dns = FakeDns({"secure.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
    http = SafeHttp(allow_private=True, resolver=dns, verify=trust)
    with Website.running(certfile=certfile, keyfile=keyfile) as site:
        result = await http.send("GET", f"https://secure.example:{site.port}/echo")
        assert result.status_code == 200
        assert result.address == "127.0.0.1"
        assert site.requests[-1].host == f"secure.example:{site.port}"
        for wrong in (f"https://other.example:{site.port}/", f"https://127.0.0.1:{site.port}/"):
            with pytest.raises(FetchError) as caught:
                await http.send("GET", wrong)
            assert "certificate is not valid" in str(caught.value)
        assert len(site.requests) == 1
