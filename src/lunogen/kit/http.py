"""Outbound HTTP to URLs that users supply (web_fetch, webhook callbacks), guarded against SSRF.

Every hop goes through the same steps:

1. the URL is parsed: http or https only, no `user:pass@`, a host, and a port that is not on the
   WHATWG Fetch "bad ports" list (SMTP, SSH, IRC...: the ports browsers refuse, so that a request
   cannot be smuggled into another protocol); any other port is allowed;
2. the host is resolved ONCE and EVERY address must pass the `AddressPolicy`;
3. the connection goes to a checked address: the URL's host is replaced by the IP, while the
   `Host` header, TLS SNI and certificate verification keep the name (httpcore's `sni_hostname`
   request extension). No second resolution happens, so a DNS answer that changes between check
   and connect (DNS rebinding) cannot move the request;
4. redirects are never followed by httpx: `send(..., follow_redirects=True)` follows up to
   `max_redirects` itself, running steps 1-3 again for each Location.

A total time limit covers resolution, every hop and reading the body; the body is streamed and
cut at `max_bytes` (the result says it was truncated). Environment proxies are ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from lunogen.errors import LunogenError

if TYPE_CHECKING:
    from lunogen.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_TIMEOUT = 15.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_MAX_REDIRECTS = 5
USER_AGENT = "LunoGen/0.1 (+https://github.com/lunogen)"

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# https://fetch.spec.whatwg.org/#port-blocking
BAD_PORTS = frozenset(
    {1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101}
    | {102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179}
    | {389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587}
    | {601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061}
    | {6000, 6566, 6665, 6666, 6667, 6668, 6669, 6697, 10080}
)

# Cloud instance metadata services: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV6_RESERVED = ipaddress.ip_network("::/8")  # IPv4-compatible ::a.b.c.d, local-use NAT64...
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SENSITIVE_HEADERS = ("authorization", "cookie", "proxy-authorization")
_BODY_HEADERS = ("content-type", "content-length", "content-encoding")


class FetchError(LunogenError):
    """The request could not be completed (DNS, connection, TLS, timeout, too many redirects)."""

    status_code = 502
    error = "Fetch failed"


class UnsafeUrlError(FetchError):
    """The URL, or an address it resolves or redirects to, is not allowed (SSRF guard)."""

    status_code = 422
    error = "URL refused"


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _always_refused(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    if address.is_unspecified or (
        isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK
    ):
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv4Address):
        if address == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if address.is_reserved:
            return "a reserved address"
    elif address in _IPV6_RESERVED and not address.is_loopback:
        return "a reserved address"
    return None


def _private_kind(address: IPAddress) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private network address"
    if not address.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses may be contacted.

    By default only globally routable unicast addresses. `allow_private` (development and tests,
    `LUNOGEN_ALLOW_PRIVATE_URLS`) also allows loopback, private (RFC 1918, fc00::/7) and CGNAT
    addresses; metadata services, link-local, multicast, unspecified and reserved addresses stay
    refused either way.
    """

    allow_private: bool = False

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be contacted ("a loopback address"), or None when it may."""
        address = unwrap(address)  # an IPv6 wrapper is judged by the IPv4 address it carries
        reason = _always_refused(address)
        if reason is None and not self.allow_private:
            reason = _private_kind(address)
        return reason


async def system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """Check what can be checked without DNS: scheme, userinfo, host syntax and port.

    Raises `UnsafeUrlError`. Use it to validate a URL when it is saved; `SafeHttp` checks the
    resolved addresses again at every request.
    """
    text = str(url)
    try:
        parsed = httpx.URL(text) if isinstance(url, str) else url
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeUrlError(f"{text!r} is not a valid URL ({exc}).") from exc
    if parsed.scheme not in ("http", "https"):
        scheme = f"{parsed.scheme}:" if parsed.scheme else "no scheme"
        raise UnsafeUrlError(f"Only http:// and https:// URLs are allowed, not {scheme} ({text}).")
    if parsed.userinfo:
        raise UnsafeUrlError("URLs with a user name or password (user:pass@host) are not allowed.")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise UnsafeUrlError(f"{text!r} has no host.")
    if not _is_ip(host) and not _HOSTNAME.match(host):
        raise UnsafeUrlError(f"{host!r} is not a valid host name.")
    port = parsed.port
    if port is not None and not 0 < port < 65536:
        raise UnsafeUrlError(f"Port {port} is out of range.")
    if port in BAD_PORTS:
        raise UnsafeUrlError(f"Port {port} is reserved for a non-HTTP protocol and is refused.")
    return parsed


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _origin(url: httpx.URL) -> tuple[str, bytes, int]:
    return url.scheme, url.raw_host, _port(url)


@dataclass
class OpenResponse:
    """A response whose headers have arrived; the body is read with `read`."""

    response: httpx.Response
    url: str
    address: str
    client: httpx.AsyncClient = field(repr=False)
    redirects: tuple[str, ...] = ()

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            await self.client.aclose()

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    async def read(self, max_bytes: int) -> tuple[bytes, bool]:
        """At most `max_bytes` of the (decompressed) body, and whether more was left unread."""
        body = bytearray()
        async for chunk in self.response.aiter_bytes():
            room = max_bytes - len(body)
            if len(chunk) > room:
                body += chunk[:room]
                return bytes(body), True
            body += chunk
        return bytes(body), False


@dataclass(frozen=True)
class FetchResult:
    url: str  # the final URL, after redirects
    status_code: int
    headers: httpx.Headers
    content: bytes
    truncated: bool  # the body was longer than max_bytes and was cut
    address: str  # the IP address the final request went to
    redirects: tuple[str, ...] = ()  # the URLs that redirected, in order

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """From the Content-Type header, else from an HTML `<meta charset>`."""
        header = re.search(r"charset=[\"']?([\w.:-]+)", self.headers.get("content-type", ""), re.I)
        if header is not None:
            return header.group(1)
        if self.content_type in ("text/html", "application/xhtml+xml"):
            meta = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", self.content[:4096], re.I)
            if meta is not None:
                return meta.group(1).decode("ascii")
        return None

    def text(self) -> str:
        charset = self.charset or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SafeHttp:
    """The only way to send HTTP to a user-supplied URL. Stateless: one client per hop."""

    allow_private: bool = False
    policy: AddressPolicy | None = None  # overrides `allow_private`
    resolver: Resolver = system_resolve
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    user_agent: str = USER_AGENT
    verify: ssl.SSLContext | bool = field(default=True, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SafeHttp:
        return cls(allow_private=settings.allow_private_urls)

    @property
    def address_policy(self) -> AddressPolicy:
        return self.policy or AddressPolicy(allow_private=self.allow_private)

    async def resolve(self, url: httpx.URL) -> list[str]:
        """Every address of the URL's host, all checked; raises `UnsafeUrlError` on any refusal."""
        host = url.raw_host.decode("ascii")
        if _is_ip(host):
            addresses = [host]
        else:
            try:
                addresses = await self.resolver(host, _port(url))
            except (OSError, UnicodeError) as exc:
                raise FetchError(f"Could not resolve the host {host!r}.") from exc
            if not addresses:
                raise FetchError(f"The host {host!r} has no address.")
        policy = self.address_policy
        for text in addresses:
            address = ipaddress.ip_address(text)
            reason = policy.refusal(address)
            if reason is not None:
                shown = host if host == str(address) else f"{host} resolves to {address}, which"
                raise UnsafeUrlError(
                    f"{url} is not allowed: {shown} is {reason}; only public internet "
                    "addresses may be contacted."
                )
        return addresses

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (becomes a FetchError naming the limit)
        follow_redirects: bool = False,
    ) -> AsyncIterator[OpenResponse]:
        """Send the request and yield the response before its body is read.

        The time limit also covers the caller's reading of the body inside the `async with`.
        """
        limit = timeout if timeout is not None else self.timeout
        try:
            async with asyncio.timeout(limit):
                opened = await self._send_hops(
                    method, url, headers or {}, content, limit, follow_redirects
                )
                try:
                    yield opened
                finally:
                    await opened.aclose()
        except TimeoutError as exc:
            raise FetchError(f"{url} did not complete within {limit:g} seconds.") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"Request to {url} failed: {_describe(exc)}") from exc

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (becomes a FetchError naming the limit)
        max_bytes: int | None = None,
        follow_redirects: bool = False,
    ) -> FetchResult:
        """Send one request (e.g. a signed webhook POST) and read at most `max_bytes` back."""
        async with self.open(
            method,
            url,
            headers=headers,
            content=content,
            timeout=timeout,
            follow_redirects=follow_redirects,
        ) as opened:
            body, truncated = await opened.read(max_bytes or self.max_bytes)
        return FetchResult(
            url=opened.url,
            status_code=opened.status_code,
            headers=opened.headers,
            content=body,
            truncated=truncated,
            address=opened.address,
            redirects=opened.redirects,
        )

    async def fetch_text(
        self,
        url: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        max_bytes: int | None = None,
    ) -> FetchResult:
        """GET for reading a page: follows redirects (each hop checked), prefers text types."""
        accept = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.1"
        return await self.send(
            "GET",
            url,
            headers={"Accept": accept},
            timeout=timeout,
            max_bytes=max_bytes,
            follow_redirects=True,
        )

    async def _send_hops(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None,
        limit: float,
        follow_redirects: bool,
    ) -> OpenResponse:
        current = parse_url(url)
        redirects: list[str] = []
        while True:
            try:
                hop = await self._send_one(method, current, headers, content, limit)
            except UnsafeUrlError as exc:
                if not redirects:
                    raise
                raise UnsafeUrlError(f"Redirect from {redirects[-1]} refused: {exc}") from exc
            status, location = hop.status_code, hop.headers.get("location")
            if not (follow_redirects and status in REDIRECT_STATUSES and location):
                hop.redirects = tuple(redirects)
                return hop
            await hop.aclose()
            if len(redirects) >= self.max_redirects:
                raise FetchError(f"Too many redirects (more than {self.max_redirects}) from {url}.")
            redirects.append(str(current))
            try:
                target = parse_url(current.join(location))
            except UnsafeUrlError as exc:
                raise UnsafeUrlError(f"Redirect from {current} refused: {exc}") from exc
            except httpx.InvalidURL as exc:
                raise FetchError(f"{current} redirected to an invalid URL {location!r}.") from exc
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, content = ("HEAD" if method == "HEAD" else "GET"), None
                headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
            if _origin(target) != _origin(current):
                headers = {k: v for k, v in headers.items() if k.lower() not in _SENSITIVE_HEADERS}
            current = target

    async def _send_one(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        limit: float,
    ) -> OpenResponse:
        """One request to a checked address of `url`'s host; the next one on connect errors."""
        addresses = await self.resolve(url)
        host = url.raw_host.decode("ascii")
        extensions = {} if _is_ip(host) or url.scheme != "https" else {"sni_hostname": host}
        last_error: httpx.ConnectError | None = None
        for address in addresses:
            client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                verify=self.verify,
                timeout=httpx.Timeout(limit, connect=min(self.connect_timeout, limit)),
                headers={"User-Agent": self.user_agent},
            )
            request = client.build_request(
                method,
                url.copy_with(host=address),
                headers={**headers, "Host": url.netloc.decode("ascii")},
                content=content,
                extensions=extensions,
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                await client.aclose()
                last_error = exc
                continue
            except BaseException:
                await client.aclose()
                raise
            return OpenResponse(response=response, url=str(url), address=address, client=client)
        assert last_error is not None
        raise last_error


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "the server's TLS certificate is not valid for this host."
    if isinstance(exc, httpx.ConnectError):
        return "could not connect."
    if isinstance(exc, httpx.TimeoutException):
        return "timed out."
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
