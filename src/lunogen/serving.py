"""`lunogen serve --workers N`: N server processes on one listening socket.

The parent does what must happen once, before any child exists: the data dir, pending migrations
(the CLI), the secrets key file, the model catalog seed and the shared rate-limit file. It imports
the application, freezes what the import made (`gc.freeze`: the children share those pages and
never scan them), binds the socket, and forks the children. Each child builds its own app, with
its own database connections, job broker and turn runner, and serves the inherited socket with
uvicorn; the kernel hands each new connection to whichever child accepts it first.

Connections stay with the child that accepted them (keep-alive), and which child wins a race
to accept is close to chance: 8 clients connecting at once were measured landing 6/2, 7/1 or
8/0 as often as 4/4. A child that holds more than its share of the open connections
(`ConnectionShares`, counts in memory shared by the whole tree) therefore answers with
`Connection: close` (`ShedExtraConnections`): the client reconnects, and the next connection may
land on a child with fewer, until the shares are even.

A message is answered by the process that accepted it (in-process jobs), and the database keeps
it to one answer whatever happens (the thread lease, one reply per inbound message). What must
be shared between the children is shared through files: the database, and in the embedded shape
the rate-limit windows (`auth.ratelimit_file`). The sweeper and housekeeping run in every child;
each step is idempotent (work is claimed by conditional updates).

Signals: SIGTERM or SIGINT to the parent sends SIGTERM to every child, which finishes like a
single server (in-flight jobs get their grace), then the parent exits 0. A child that dies is
replaced, unless it died before it served (a start-up failure: restarting cannot help) or
children keep dying (more than `MAX_RESTARTS` in `RESTART_WINDOW_SECONDS`): then the parent
stops them all and exits 1 with the reason. A child whose parent dies gets SIGTERM from the
kernel (`PR_SET_PDEATHSIG`), so none is left behind.

HTTPS (`--tls-cert`/`--tls-key`): the CLI checks the files once (`TlsFiles.context`) before
anything starts; then each server process, the single one or every child, builds its own
context from them (uvicorn's `ssl_context_factory`), TLS 1.3 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import mmap
import os
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lunogen.config import Settings

log = structlog.get_logger(__name__)

BACKLOG = 2048
STOP_SECONDS = 30.0  # a child's longest graceful stop (open requests, then the job grace)
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
WATCH_SECONDS = 1.0  # how often the supervisor looks for dead children without a SIGCHLD
EXIT_START_FAILED = 3  # a child that never served (uvicorn's own code for it)
_PR_SET_PDEATHSIG = 1
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


class TlsFilesError(ValueError):
    """The TLS certificate or key cannot be served; the message says which file and why."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files `lunogen serve` speaks HTTPS with: the certificate chain and its key."""

    cert: Path
    key: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles | None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return cls(settings.tls_cert_file, settings.tls_key_file)

    def context(self) -> ssl.SSLContext:
        """A server context accepting TLS 1.3 only (an older client's handshake fails).

        Raises `TlsFilesError` naming the file at fault: missing or unreadable, not a PEM
        certificate (or key), a key protected by a passphrase, a key of another certificate.
        """
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        cert_pem = _read_pem(self.cert, "certificate")
        key_pem = _read_pem(self.key, "key")
        try:
            x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise TlsFilesError(f"TLS certificate {self.cert} is not a PEM certificate") from exc
        try:
            serialization.load_pem_private_key(key_pem, password=None)
        except TypeError as exc:  # encrypted: uvicorn would prompt on the terminal
            raise TlsFilesError(
                f"TLS key {self.key} is protected by a passphrase: give it unencrypted "
                "(readable by this user only)"
            ) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise TlsFilesError(f"TLS key {self.key} is not a PEM private key") from exc
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise TlsFilesError(
                    f"TLS key {self.key} does not belong to the certificate in {self.cert}"
                ) from exc
            raise TlsFilesError(
                f"TLS certificate {self.cert} and key {self.key} cannot be used: "
                f"{exc.reason or exc}"
            ) from exc
        return context

    def uvicorn_options(self) -> dict[str, Any]:
        """What uvicorn needs to serve with `context()` (built anew in each process)."""
        return {"ssl_context_factory": lambda _config, _default: self.context()}


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise TlsFilesError(f"TLS {what} file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise TlsFilesError(f"TLS {what} file {path} is a directory") from exc
    except PermissionError as exc:
        raise TlsFilesError(f"TLS {what} file {path} is not readable by this user") from exc
    except OSError as exc:
        raise TlsFilesError(f"TLS {what} file {path} cannot be read: {exc.strerror}") from exc


def default_workers() -> int:
    """One process per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ServeError(RuntimeError):
    """The server stopped because its children could not serve; the message says why."""


def prepare_first_start(settings: Settings) -> None:
    """What the children would otherwise race for on a fresh data dir (migrations are the
    CLI's): the key file, the model catalog, the shared rate-limit file."""
    import asyncio

    from lunogen.auth import ratelimit_file
    from lunogen.db import create_engine, create_sessionmaker
    from lunogen.kit.crypto import load_keyring
    from lunogen.llm import catalog

    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    load_keyring(settings.secret_keys, settings.data_dir)
    if not settings.redis_url:
        ratelimit_file.prepare(shared_rate_limit_file(settings))

    async def seed() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                await catalog.seed_if_empty(session)
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(seed())


def shared_rate_limit_file(settings: Settings) -> Path:
    from lunogen.auth.ratelimit_file import FILE_NAME

    return settings.data_dir / FILE_NAME


def build_child_app(settings: Settings) -> FastAPI:
    """The app of one child: as `lunogen serve` builds it, with the rate-limit windows in the
    shared file when there is no Redis to share them."""
    from lunogen.app import create_app
    from lunogen.auth.ratelimit import RateLimiter, create_storage

    app = create_app(settings)
    if not settings.redis_url:
        shared = shared_rate_limit_file(settings)
        app.state.rate_limiter = RateLimiter(create_storage(None, shared_file=shared))
    return app


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


_COUNT = struct.Struct("q")


class ConnectionShares:
    """How many connections each child holds, in memory mapped before the fork (so shared).

    Each child keeps its own slot current (`ShedExtraConnections`); the supervisor zeroes the
    slot of a child that died.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._memory = mmap.mmap(-1, _COUNT.size * workers)

    def set(self, index: int, count: int) -> None:
        _COUNT.pack_into(self._memory, _COUNT.size * index, count)

    def counts(self) -> list[int]:
        return [_COUNT.unpack_from(self._memory, _COUNT.size * i)[0] for i in range(self.workers)]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLISH_EVERY_SECONDS = 0.1


class ShedExtraConnections:
    """ASGI: while this child holds more than its share of the open connections, close the
    connection after the answer (`Connection: close`), so that its client reconnects and may
    land on a child with fewer. Nothing else about the answer changes.

    A connection being shed still counts in the total (its client comes back), not in this
    child's own count: eight connections that all landed here shed four, not seven. The child
    publishes its count at every request and every `PUBLISH_EVERY_SECONDS`, so a count never
    stays stale for long when clients leave.
    """

    def __init__(self, app: ASGIApp, *, shares: ConnectionShares, index: int) -> None:
        self.app = app
        self.shares = shares
        self.index = index
        self.connections: Callable[[], int] = lambda: 0
        self.shedding = 0
        self._publisher: asyncio.Task[None] | None = None

    def _held(self) -> int:
        held = max(0, self.connections() - self.shedding)
        self.shares.set(self.index, held)
        return held

    def _over_share(self) -> bool:
        held = self._held()
        total = sum(self.shares.counts()) + self.shedding
        return held > -(-total // self.shares.workers)

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_SECONDS)
            self._held()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_forever())
        if not self._over_share():
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        self.shedding += 1
        try:
            await self.app(scope, receive, closing)
        finally:
            self.shedding -= 1


@dataclass
class _Child:
    index: int
    pid: int
    started: float = field(default_factory=time.monotonic)


@dataclass
class Supervisor:
    """Forks `workers` children serving `sock`, keeps them running, stops them on a signal."""

    sock: socket.socket
    workers: int
    run_child: Callable[[int], int]  # in the child: serve, return the exit code
    shares: ConnectionShares | None = None
    children: dict[int, _Child] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    stopping: bool = False

    def run(self) -> None:
        """Until a signal (returns) or a failure that restarting cannot mend (`ServeError`)."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(self.workers):
                self._fork(index, previous)
            problem = self._watch(previous)
        finally:
            self._stop_all()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if problem:
            raise ServeError(problem)

    def _fork(self, index: int, parent_mask: set[int | signal.Signals]) -> None:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
                _follow_parent(parent)
                code = self.run_child(index)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children[pid] = _Child(index, pid)
        log.info("serve_worker_started", worker=index, pid=pid)

    def _watch(self, parent_mask: set[int | signal.Signals]) -> str | None:
        while True:
            # A time-out too: with another thread in the process (never in `lunogen serve`,
            # but in a test) a SIGCHLD may go to that thread instead of this wait.
            info = signal.sigtimedwait(_SIGNALS, WATCH_SECONDS)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("serve_stopping", signal=signal.Signals(info.si_signo).name)
                return None
            for child, status in self._reap():
                if self.shares is not None:
                    self.shares.set(child.index, 0)
                code = os.waitstatus_to_exitcode(status)
                lived = time.monotonic() - child.started
                log.warning(
                    "serve_worker_died",
                    worker=child.index,
                    pid=child.pid,
                    exit_code=code,
                    seconds=round(lived, 1),
                )
                if code == EXIT_START_FAILED:
                    return (
                        f"server process {child.index} could not start (exit {code}): "
                        "see its error above"
                    )
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_SECONDS]
                if len(self.restarts) >= MAX_RESTARTS:
                    return (
                        f"server processes died {len(self.restarts) + 1} times in "
                        f"{RESTART_WINDOW_SECONDS:.0f} s (the last: process {child.index}, "
                        f"exit {code}); stopping"
                    )
                self.restarts.append(now)
                self._fork(child.index, parent_mask)

    def _reap(self) -> list[tuple[_Child, int]]:
        """The children that have ended since the last look (without waiting)."""
        ended = []
        for pid in list(self.children):  # ours only: never reap a process someone else started
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                ended.append((self.children.pop(pid), status))
        return ended

    def _stop_all(self) -> None:
        """SIGTERM every child, wait up to `STOP_SECONDS` for them all, then SIGKILL the rest."""
        self.stopping = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while self.children:
            for child, status in self._reap():
                code = os.waitstatus_to_exitcode(status)
                log.info("serve_worker_stopped", worker=child.index, pid=child.pid, exit_code=code)
            left = deadline - time.monotonic()
            if not self.children or left <= 0:
                break
            signal.sigtimedwait({signal.SIGCHLD}, min(left, 0.5))
        for pid in list(self.children):
            log.warning("serve_worker_killed", pid=pid, waited_seconds=STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid, None)


def _open_connections(state: Any) -> int:
    """Connections of this child that are not on their way out (uvicorn's protocols)."""
    count = 0
    for protocol in state.connections:
        transport = getattr(protocol, "transport", None)
        if transport is None or not transport.is_closing():
            count += 1
    return count


def _follow_parent(parent: int) -> None:
    """Have the kernel send this child SIGTERM when its parent dies; if it already has, stop."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(0)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve_child(
    index: int,
    sock: socket.socket,
    build: Callable[[], FastAPI],
    *,
    shares: ConnectionShares | None = None,
    proxy_headers: bool = True,
    tls: TlsFiles | None = None,
) -> int:
    """In a forked child: build the app and serve `sock` until SIGTERM/SIGINT; the exit code.

    Every log line of the child carries `serve_worker` (its index) and its `pid`. A signal that
    arrives before uvicorn listens stops the child at once (it holds nothing yet); uvicorn
    re-raises the signal it stopped for, which this handler turns into a clean exit 0.
    """
    import uvicorn

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_exit)
    structlog.contextvars.bind_contextvars(serve_worker=index, pid=os.getpid())
    server: uvicorn.Server | None = None
    try:
        app: ASGIApp = build()
        shed = None
        if shares is not None:
            app = shed = ShedExtraConnections(app, shares=shares, index=index)
        gc.freeze()
        gc.enable()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                proxy_headers=proxy_headers,
                log_config=None,
                access_log=False,
                ws="none",
                **(tls.uvicorn_options() if tls is not None else {}),
            )
        )
        if shed is not None:
            shed.connections = partial(_open_connections, server.server_state)
        server.run(sockets=[sock])
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0
    except Exception:
        log.exception("serve_worker_failed", worker=index)
        return 1 if server is not None and server.started else EXIT_START_FAILED
    return 0 if server.started else EXIT_START_FAILED
