"""The `lunogen` command line.

Each command imports what it needs when it runs: `serve` then imports the whole app with the
garbage collector paused (see `serve`), and quick commands stay quick.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from lunogen import __version__

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from lunogen.config import Settings

T = TypeVar("T")

app = typer.Typer(help="LunoGen: host AI agents.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Accounts.", no_args_is_help=True)
apikey_app = typer.Typer(help="Developer API keys.", no_args_is_help=True)
mail_app = typer.Typer(help="Outgoing email.", no_args_is_help=True)
secrets_app = typer.Typer(help="Secrets encrypted at rest.", no_args_is_help=True)
models_app = typer.Typer(help="The model catalog.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(apikey_app, name="apikey")
app.add_typer(mail_app, name="mail")
app.add_typer(secrets_app, name="secrets")
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)


def _settings(data_dir: Path | None = None) -> Settings:
    from lunogen.config import Settings

    return Settings(data_dir=data_dir) if data_dir else Settings()


def _run_db(
    settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    from lunogen.db import create_engine, create_sessionmaker
    from lunogen.errors import LunogenError

    async def main() -> T:
        engine = create_engine(settings.effective_database_url)
        try:
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except LunogenError as exc:
        err_console.print(f"[red]Error:[/red] {exc.message or exc.error}")
        raise typer.Exit(1) from exc


def _upgrade(settings: Settings) -> bool:
    """Apply pending migrations (True when some were). Alembic is loaded only then; a database
    migrated by a newer LunoGen is refused (exit 1)."""
    from lunogen.migrations import SchemaAheadError, needs_upgrade, upgrade

    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = settings.effective_database_url
    try:
        pending = needs_upgrade(url)
    except SchemaAheadError as exc:
        err_console.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    if pending:
        with console.status("Applying database migrations…"):
            upgrade(url)
    return pending


@app.command()
def version() -> None:
    """Print the LunoGen version."""
    console.print(__version__)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations first")] = True,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="Run no jobs here: `lunogen worker` processes do (needs LUNOGEN_REDIS_URL)",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            envvar="LUNOGEN_SERVE_WORKERS",
            help="Server processes sharing the port and the database (default: one per CPU)",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="Serve HTTPS (TLS 1.3 only) with this PEM certificate chain; needs --tls-key "
            "(default LUNOGEN_TLS_CERT_FILE)",
            show_default=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            help="The certificate's PEM private key, unencrypted (default LUNOGEN_TLS_KEY_FILE)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the server (embedded shape: applies pending migrations first).

    With several processes (`--workers`, by default one per CPU) the first one does the
    first-start work, then forks the others and watches them (`lunogen.serving`).
    """
    # Starting makes ~250,000 objects that live as long as the process, and little garbage:
    # no cycle collection while they are made (~0.1 s less), and none of them scanned again by
    # the collections while serving (a full one would otherwise pause requests ~80 ms).
    gc.disable()
    try:
        settings = _settings(data_dir)
        if no_worker:
            if not settings.uses_redis_jobs:
                err_console.print(
                    "[red]Error:[/red] --no-worker needs a shared job queue: set "
                    "LUNOGEN_REDIS_URL and run `lunogen worker` processes."
                )
                raise typer.Exit(2)
            settings = settings.model_copy(update={"embedded_worker": False})
        settings = _with_tls(settings, tls_cert, tls_key)
        if migrate and _upgrade(settings):
            gc.collect()  # what Alembic left is garbage: not to be frozen
        from lunogen.serving import default_workers

        processes = workers or default_workers()
        if processes > 1:
            _serve_processes(settings, host, port, processes)
            return
        import uvicorn

        from lunogen.app import create_app
        from lunogen.serving import TlsFiles

        application = create_app(settings)
        gc.freeze()
    finally:
        gc.enable()
    tls = TlsFiles.from_settings(settings)
    console.print(
        f"LunoGen {__version__} on {_scheme(settings)}://{host}:{port} "
        f"(data in {settings.data_dir})"
    )
    uvicorn.run(
        application,
        host=host,
        port=port,
        proxy_headers=True,
        log_config=None,
        access_log=False,
        ws="none",  # no WebSocket routes: spares importing `websockets` (~40 ms) at each start
        **(tls.uvicorn_options() if tls is not None else {}),
    )


def _with_tls(settings: Settings, cert: Path | None, key: Path | None) -> Settings:
    """The settings with the TLS files of the command line (over LUNOGEN_TLS_*), checked: both
    or neither, readable, the key the certificate's. A problem stops here (exit 2)."""
    from lunogen.serving import TlsFiles, TlsFilesError

    cert = cert or settings.tls_cert_file
    key = key or settings.tls_key_file
    if cert is None and key is None:
        return settings
    if cert is None or key is None:
        missing = "--tls-key" if cert is not None else "--tls-cert"
        err_console.print(
            f"[red]Error:[/red] HTTPS needs both --tls-cert and --tls-key: {missing} is missing "
            "(or set LUNOGEN_TLS_CERT_FILE and LUNOGEN_TLS_KEY_FILE)."
        )
        raise typer.Exit(2)
    try:
        TlsFiles(cert, key).context()
    except TlsFilesError as exc:
        err_console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if not settings.public_url.startswith("https://"):
        err_console.print(
            f"[yellow]Warning:[/yellow] LUNOGEN_PUBLIC_URL is {settings.public_url}: links in "
            "emails and the Google redirect are built from it; set it to this server's "
            "https:// address."
        )
    return settings.model_copy(update={"tls_cert_file": cert, "tls_key_file": key})


def _scheme(settings: Settings) -> str:
    return "https" if settings.serves_tls else "http"


def _serve_processes(settings: Settings, host: str, port: int, processes: int) -> None:
    """`serve` with `processes` server processes (called with the collector paused)."""
    import lunogen.app  # noqa: F401  imported once here, shared by every child
    from lunogen import serving
    from lunogen.kit.logging import configure_logging

    configure_logging(settings.log_level, json=settings.log_json)
    serving.prepare_first_start(settings)
    gc.collect()
    gc.freeze()
    try:
        sock = serving.bind(host, port)
    except OSError as exc:
        err_console.print(f"[red]Error:[/red] cannot listen on {host}:{port}: {exc.strerror}")
        raise typer.Exit(1) from exc
    console.print(
        f"LunoGen {__version__} on {_scheme(settings)}://{host}:{port} with {processes} processes "
        f"(data in {settings.data_dir})"
    )
    shares = serving.ConnectionShares(processes)
    supervisor = serving.Supervisor(
        sock,
        processes,
        lambda index: serving.serve_child(
            index,
            sock,
            lambda: serving.build_child_app(settings),
            shares=shares,
            tls=serving.TlsFiles.from_settings(settings),
        ),
        shares=shares,
    )
    try:
        supervisor.run()
    except serving.ServeError as exc:
        err_console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        sock.close()


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="Jobs run at once (default LUNOGEN_WORKER_CONCURRENCY)"),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory")] = None,
) -> None:
    """Run jobs from the shared queue (scaled shape: PostgreSQL + Redis), until SIGTERM."""
    from lunogen import composition  # noqa: F401  (the domains register their jobs and parts)
    from lunogen.worker.run import run_worker

    settings = _settings(data_dir)
    problem = _worker_problem(settings)
    if problem:
        err_console.print(f"[red]Error:[/red] {problem}")
        raise typer.Exit(2)
    console.print(
        f"LunoGen {__version__} worker: {concurrency or settings.worker_concurrency} jobs at "
        f"once from {settings.job_queue}"
    )
    asyncio.run(run_worker(settings, concurrency=concurrency))


def _worker_problem(settings: Settings) -> str | None:
    from lunogen.kit.crypto import key_file

    if not settings.uses_redis_jobs:
        return "a worker needs the shared job queue: set LUNOGEN_REDIS_URL"
    if not settings.secret_keys and not key_file(settings.data_dir).exists():
        return (
            "no secrets key: set LUNOGEN_SECRET_KEYS to the servers' keys (a worker must "
            "decrypt what they encrypt)"
        )
    return None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending database migrations."""
    _upgrade(_settings())
    console.print("Database is up to date.")


@user_app.command("create")
def user_create(
    email: str,
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role")] = False,
    role: Annotated[str, typer.Option(help="Role: user, support or admin")] = "user",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Create an active account (email verified). Consent is given at first sign-in."""
    from lunogen.account import service as accounts
    from lunogen.account.roles import ROLES
    from lunogen.billing.grants import grant_starter_credits

    role = "admin" if admin else role
    if role not in ROLES:
        err_console.print(f"[red]Error:[/red] role must be one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    settings = _settings()

    async def work(sm: async_sessionmaker[AsyncSession]) -> tuple[str, str]:
        async with sm() as session:
            user = await accounts.create_user_admin(
                session,
                email=email,
                name=name or email.split("@")[0],
                password=password,
                role=role,
            )
            await grant_starter_credits(session, user=user, credits=settings.starter_credits)
            await session.commit()
            return user.id, user.email

    user_id, stored_email = _run_db(settings, work)
    console.print(f"Created {role} {stored_email} (id {user_id}).")
    if password is None:
        console.print("No password set: use 'Forgot password' or Google to sign in.")


@apikey_app.command("create")
def apikey_create(
    email: str,
    name: Annotated[str, typer.Option(help="A name to recognise the key by")] = "CLI key",
    scope: Annotated[
        list[str] | None, typer.Option(help="Scope (repeatable); default full")
    ] = None,
) -> None:
    """Create a developer key for EMAIL and print it once. Plan key limits apply."""
    from pydantic import ValidationError

    from lunogen.account import service as accounts
    from lunogen.auth import apikeys
    from lunogen.auth.schemas import ApiKeyCreate
    from lunogen.auth.scopes import Scope
    from lunogen.errors import LunogenError

    try:
        scopes = [Scope(s) for s in (scope or ["full"])]
    except ValueError as exc:
        valid = ", ".join(s.value for s in Scope)
        err_console.print(f"[red]Error:[/red] {exc}; valid scopes: {valid}")
        raise typer.Exit(2) from exc
    try:  # the same rules as POST /api/v1/keys
        data = ApiKeyCreate(name=name, scopes=scopes)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        err_console.print(f"[red]Error:[/red] {problems}")
        raise typer.Exit(2) from exc
    settings = _settings()

    async def work(sm: async_sessionmaker[AsyncSession]) -> str:
        async with sm() as session:
            user = await accounts.find_by_email(session, email)
            if user is None:
                raise LunogenError(f"No account with email {email}")
            _key, plaintext = await apikeys.create_key(
                session, user=user, name=data.name, scopes=data.scopes, client=None
            )
            await session.commit()
            return plaintext

    plaintext = _run_db(settings, work)
    err_console.print("Your key (shown once; store it now):")
    console.print(plaintext)


@mail_app.command("outbox")
def mail_outbox(
    to: Annotated[str | None, typer.Option(help="Only mail to this address")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
) -> None:
    """List emails in the development outbox (and recent sent mail), newest first."""
    from sqlalchemy import select

    from lunogen.kit.crypto import load_keyring
    from lunogen.notification.models import OutboundEmail

    settings = _settings()
    keyring = load_keyring(settings.secret_keys, settings.data_dir)

    async def work(sm: async_sessionmaker[AsyncSession]) -> list[OutboundEmail]:
        async with sm() as session:
            query = select(OutboundEmail).order_by(OutboundEmail.created_at.desc()).limit(limit)
            if to:
                query = query.where(OutboundEmail.to_address == to.strip().lower())
            return list((await session.execute(query)).scalars())

    emails = _run_db(settings, work)
    if not emails:
        console.print("The outbox is empty.")
    for email in emails:
        console.rule(f"{email.created_at:%Y-%m-%d %H:%M:%S} · {email.status}")
        console.print(f"To: {email.to_address}\nSubject: {email.subject}\n")
        console.print(keyring.decrypt(email.body_encrypted), markup=False, highlight=False)


@secrets_app.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new key spec to put first in LUNOGEN_SECRET_KEYS before `secrets rotate`."""
    from lunogen.kit.crypto import Key

    console.print(Key.generate().spec())


@secrets_app.command("rotate")
def secrets_rotate(
    prune: Annotated[
        bool, typer.Option(help="Drop the old keys from the data-dir key file afterwards")
    ] = False,
) -> None:
    """Re-encrypt every stored secret under a new primary key.

    With the key file in the data dir, a new key is generated and put first. With
    LUNOGEN_SECRET_KEYS, put a new key first yourself (`secrets generate-key`), then run this.
    """
    from rich.progress import Progress

    from lunogen.kit.crypto import CryptoError, Key, KeyRing, load_keyring, write_key_file
    from lunogen.kit.rotation import count_encrypted, reencrypt_all
    from lunogen.secret_columns import ENCRYPTED_COLUMNS

    settings = _settings()
    ring = load_keyring(settings.secret_keys, settings.data_dir)
    from_file = not settings.secret_keys
    if from_file:
        ring = KeyRing([Key.generate(), *ring.keys])
        write_key_file(settings.data_dir, ring)
        console.print(f"New primary key {ring.primary_id} written to the data dir.")

    async def work(sm: async_sessionmaker[AsyncSession]) -> int:
        total = await count_encrypted(sm, ENCRYPTED_COLUMNS)
        with Progress(console=console) as progress:
            task = progress.add_task("Re-encrypting secrets", total=total)
            return await reencrypt_all(
                sm, ring, ENCRYPTED_COLUMNS, lambda n: progress.advance(task, n)
            )

    try:
        changed = _run_db(settings, work)
    except CryptoError as exc:
        err_console.print(
            f"[red]Error:[/red] a stored secret cannot be decrypted ({exc}). Keep every old key "
            "in the ring: LUNOGEN_SECRET_KEYS=<new key>,<old keys…> (or the data-dir key file)."
        )
        raise typer.Exit(1) from exc
    console.print(f"Re-encrypted {changed} secret(s) under key {ring.primary_id}.")
    if prune and from_file:
        write_key_file(settings.data_dir, KeyRing([ring.keys[0]]))
        console.print("Old keys removed from the key file.")
    elif len(ring.keys) > 1:
        console.print("Old keys are still in the ring; remove them once every server restarted.")


@models_app.command("refresh")
def models_refresh() -> None:
    """Update the model catalog and prices from the provider's `GET /models`.

    Models are added and updated, never removed. On failure the catalog is left as it was.
    """
    from lunogen.llm.refresh import CatalogRefreshError, RefreshResult, refresh_catalog

    settings = _settings()

    async def work(sm: async_sessionmaker[AsyncSession]) -> RefreshResult:
        async with sm() as session:
            try:
                result = await refresh_catalog(session, settings)
            except CatalogRefreshError as exc:
                raise CatalogRefreshError(f"{exc.message}; the catalog is unchanged.") from exc
            await session.commit()
            return result

    with console.status(f"Fetching models from {settings.llm_base_url}…"):
        result = _run_db(settings, work)
    console.print(
        f"Refreshed {result.models} models ({result.added} new) from {settings.llm_base_url}."
    )


billing_app = typer.Typer(help="Prepaid credits.", no_args_is_help=True)
app.add_typer(billing_app, name="billing")


@billing_app.command("verify")
def billing_verify() -> None:
    """Check the credit ledger: every balance equals the sum of its entries, and more.

    Exits 1 and lists each problem found, if any.
    """
    from rich.markup import escape
    from rich.progress import Progress

    from lunogen.billing.verify import Problem, count_accounts, verify_all_in_batches

    settings = _settings()

    async def work(sm: async_sessionmaker[AsyncSession]) -> tuple[int, list[Problem]]:
        async with sm() as session:
            total = await count_accounts(session)
        verified = 0
        with Progress(console=console) as progress:
            task = progress.add_task("Verifying credit accounts", total=total)

            def advance(n: int) -> None:
                nonlocal verified
                verified += n
                progress.advance(task, n)

            problems = await verify_all_in_batches(sm, advance)
        return verified, problems

    total, problems = _run_db(settings, work)
    if problems:
        for problem in problems:
            err_console.print(f"[red]Problem:[/red] {escape(str(problem))}", highlight=False)
        err_console.print(f"{len(problems)} problem(s) in the credit ledger.")
        raise typer.Exit(1)
    console.print(f"{total} accounts verified.")


sandbox_app = typer.Typer(help="LunoEdge agent sandboxes.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("check")
def sandbox_check() -> None:
    """Report which sandbox backends work here, each proven by a quick self-test.

    Exits 1 when the backend LUNOGEN_SANDBOX selects cannot run (or fails its self-test).
    """
    from rich.markup import escape
    from rich.table import Table

    from lunogen.kit.logging import configure_logging
    from lunogen.sandbox.check import check

    settings = _settings()
    configure_logging("WARNING", json=False)  # the table says it all; each run's log is noise
    with console.status("Testing sandbox backends"):
        report = check(settings.sandbox, settings.sandbox_quota)
    table = Table("backend", "status", "self-test")
    for backend in report.backends:
        if not backend.available:
            table.add_row(backend.name, "[red]unavailable[/red]", escape(backend.reason or ""))
            continue
        status = "[green]ok[/green]" if backend.passed else "[red]FAILED[/red]"
        if backend.available and not backend.isolated:
            status += " [yellow](not isolated)[/yellow]"
        lines = [
            f"{'✓' if c.ok else '✗'} {escape(c.name)}"
            + (f": {escape(c.detail)}" if c.detail else "")
            for c in backend.checks
        ]
        table.add_row(backend.name, status, "\n".join(lines))
    console.print(table)
    if report.chosen is None:
        err_console.print(f"[red]LUNOGEN_SANDBOX={report.configured}:[/red] {report.choice_error}")
        raise typer.Exit(1)
    console.print(f"LUNOGEN_SANDBOX={report.configured} uses: {report.chosen}")
    if not report.ok:
        err_console.print(f"[red]The {report.chosen} backend failed its self-test.[/red]")
        raise typer.Exit(1)


policy_app = typer.Typer(help="The Terms of Service and the Privacy Policy.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("publish")
def policy_publish(
    file: Annotated[Path, typer.Argument(help="The new version's text (Markdown, UTF-8)")],
    kind: Annotated[str, typer.Option("--kind", help="terms or privacy")],
    effective: Annotated[str, typer.Option("--effective", help="YYYY-MM-DD (UTC)")],
    material: Annotated[
        bool,
        typer.Option(
            "--material", help="Tell every active user in-app and by email; they must accept it"
        ),
    ] = False,
    version: Annotated[
        str | None, typer.Option("--version", help="Defaults to the effective date")
    ] = None,
    summary: Annotated[
        str, typer.Option("--summary", help="What changes (default: the changed sections)")
    ] = "",
) -> None:
    """Publish a new version of the Terms or the Privacy Policy (audited). A material change
    must take effect after today; the server's job process sends its notices."""
    from lunogen.privacy import documents

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err_console.print(f"[red]Error:[/red] cannot read {file}: {exc}")
        raise typer.Exit(2) from exc
    data = documents.Publication(
        kind=kind,
        version=version or effective[:10],
        effective=effective,
        material=material,
        text=text,
        summary=summary,
    )
    settings = _settings()

    async def work(sm: async_sessionmaker[AsyncSession]) -> documents.Document:
        async with sm() as session:
            published = await documents.publish(
                session, data=data, actor_user_id=None, client=None, enqueue_notice=False
            )
            await session.commit()
            return published

    published = _run_db(settings, work)
    when = published.effective_at.strftime("%Y-%m-%d %H:%M UTC")
    console.print(
        f"Published {published.title} version {published.version}, in effect from {when}"
        + (" (material)." if published.material else ".")
    )
    console.print(f"Changes: {published.summary}")
    if published.material:
        console.print(
            "Every active user will be told in-app and by email: the running server (or its "
            "workers) sends the notices within seconds."
        )
