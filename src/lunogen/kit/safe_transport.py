"""An httpx transport with `kit.http.SafeHttp`'s SSRF guarantees, for SDKs that take a client.

Some libraries (the MCP SDK) send their HTTP through an `httpx.AsyncClient` they are handed and
follow redirects themselves. `guarded_client` builds such a client; every request it sends, the
first and each redirect or discovery request the library makes, goes through the same steps as
`SafeHttp`:

1. the URL is checked (`parse_url`: http(s) only, no userinfo, no bad ports); with
   `https_only`, plain http is refused too;
2. the host is resolved once and every address must pass the guard's `AddressPolicy`
   (metadata, link-local and, unless allowed, loopback and private addresses are refused);
3. the request goes to a checked address: the URL's host is replaced by the IP while the `Host`
   header and TLS SNI/certificate checks keep the name (`sni_hostname`), so DNS rebinding cannot
   move it. Connections are pooled per host name, never shared between names.

Response bodies are cut off with an error past `max_bytes`. Environment proxies are ignored.
The caller's client timeout applies to each request; wrap whole exchanges in `asyncio.timeout`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from lunogen.kit.http import FetchError, SafeHttp, UnsafeUrlError, parse_url

DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class ResponseTooLargeError(FetchError):
    """A response body was longer than the transport's `max_bytes`."""


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, *, max_bytes: int, url: str) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._max_bytes:
                raise ResponseTooLargeError(
                    f"The response from {self._url} is larger than {self._max_bytes} bytes."
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """Sends each request to a checked address of its host (see the module docstring)."""

    def __init__(
        self, guard: SafeHttp, *, https_only: bool, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._guard = guard
        self._https_only = https_only
        self._max_bytes = max_bytes
        self._pools: dict[tuple[str, str], httpx.AsyncHTTPTransport] = {}

    def _pool(self, scheme: str, host: str) -> httpx.AsyncHTTPTransport:
        key = (scheme, host)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(
                verify=self._guard.verify, trust_env=False
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = parse_url(request.url)
        if self._https_only and url.scheme != "https":
            raise UnsafeUrlError(
                f"{url} is not allowed: only https:// URLs may be contacted on this server."
            )
        addresses = await self._guard.resolve(url)
        host = url.raw_host.decode("ascii")
        extensions = dict(request.extensions)
        if url.scheme == "https" and host not in addresses:
            extensions["sni_hostname"] = host
        headers = httpx.Headers(request.headers)
        headers["Host"] = url.netloc.decode("ascii")
        headers["User-Agent"] = self._guard.user_agent
        pool = self._pool(url.scheme, host)
        last_error: httpx.ConnectError | None = None
        for address in addresses:
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=address),
                headers=headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                response = await pool.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                last_error = exc
                continue
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _CappedStream(
                response.stream, max_bytes=self._max_bytes, url=str(request.url)
            )
            return response
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def guarded_client(
    guard: SafeHttp,
    *,
    https_only: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
    auth: httpx.Auth | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` whose every request goes through `GuardedTransport`.

    Redirects are not followed by the client itself (`follow_redirects=False`); a library that
    follows them sends each hop through the transport again, so each is re-checked.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(guard, https_only=https_only, max_bytes=max_bytes),
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(guard.connect_timeout, timeout)),
        headers=headers,
        auth=auth,
    )
