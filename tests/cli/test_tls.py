"""`lunogen serve --tls-cert --tls-key`: HTTPS with TLS 1.3 as the minimum, HSTS and Secure
cookies, and a clear refusal (exit 2) of TLS files that cannot be served.

The certificates are made here, at test time, with `cryptography`: self-signed for 127.0.0.1,
and trusted by the test's clients as their only certificate authority.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lunogen.auth.sessions import CSRF_COOKIE, SESSION_COOKIE
from lunogen.config import Settings
from lunogen.kit.middleware import HSTS
from tests.cli.conftest import Cli
from tests.cli.test_serve_start import _env, _free_port, _lunogen
from tests.helpers import PASSWORD

HOST = "127.0.0.1"
EMAIL = "tls@example.com"


def _flat(text: str) -> str:
    """`text` without any whitespace: rich wraps long lines anywhere, even inside a path."""
    return "".join(text.split())


def _says(output: str, expected: str) -> bool:
    return _flat(expected) in _flat(output)


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path
    other_key: Path  # a key of no certificate here
    encrypted_key: Path  # `key`, protected by a passphrase


def _private_key(
    path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None
) -> None:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    path.chmod(0o600)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = Pem(
        cert=folder / "cert.pem",
        key=folder / "key.pem",
        other_key=folder / "other-key.pem",
        encrypted_key=folder / "encrypted-key.pem",
    )
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _private_key(files.key, key)
    _private_key(files.other_key, ec.generate_private_key(ec.SECP256R1()))
    _private_key(files.encrypted_key, key, password=b"a passphrase")
    return files


def _client_context(pem: Pem, *, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client trusting only the test certificate; with `maximum`, no newer TLS than that."""
    context = ssl.create_default_context(cafile=str(pem.cert))
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = maximum
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    """The TLS version agreed on a new connection."""
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        return tls.version()


def _wait_healthy(server: subprocess.Popen[str], base: str, verify: ssl.SSLContext) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/healthz", verify=verify, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server did not become healthy within 120 s")


@contextmanager
def _https_server(
    settings: Settings, pem: Pem, log: Path, *, workers: int
) -> Iterator[tuple[int, str]]:
    port = _free_port()
    base = f"https://{HOST}:{port}"
    args = ["serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    args += ["--tls-cert", str(pem.cert), "--tls-key", str(pem.key)]
    with log.open("w") as output:
        server = subprocess.Popen(
            _lunogen(*args),
            env=_env(settings) | {"LUNOGEN_PUBLIC_URL": base},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_healthy(server, base, _client_context(pem))
            yield port, base
        finally:
            server.terminate()
            server.wait(timeout=60)


def _assert_tls12_refused(port: int, pem: Pem, attempts: int) -> None:
    """Every one of `attempts` TLS 1.2 handshakes fails (with several processes, whichever
    accepts the connection)."""
    for _ in range(attempts):
        with pytest.raises(ssl.SSLError):
            _handshake(port, _client_context(pem, maximum=ssl.TLSVersion.TLSv1_2))


def _cookie(response: httpx.Response, name: str) -> list[str]:
    """The attributes of the `Set-Cookie` for `name`, lower-cased, without its value."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return [part.strip().lower() for part in header.split(";")[1:]]
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


def test_https_with_several_processes_refuses_tls12_and_sends_hsts_and_secure_cookies(
    settings: Settings, cli: Cli, pem: Pem, tmp_path: Path
) -> None:
    created = cli.run("user", "create", EMAIL, "--password-stdin", input=PASSWORD)
    assert created.exit_code == 0, created.output
    log = tmp_path / "server.log"
    with _https_server(settings, pem, log, workers=2) as (port, base):
        _assert_tls12_refused(port, pem, attempts=8)
        assert _handshake(port, _client_context(pem)) == "TLSv1.3"
        # Plain http on the same port is no way in either.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{HOST}:{port}/healthz", timeout=5)

        with httpx.Client(base_url=base, verify=_client_context(pem), timeout=30) as browser:
            for _ in range(4):  # new connections, so both processes answer some
                health = browser.get("/healthz", headers={"Connection": "close"})
                assert health.status_code == 200
                assert health.headers["strict-transport-security"] == HSTS
            page = browser.get("/login")
            assert page.headers["strict-transport-security"] == HSTS

            signed_in = browser.post(
                "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}
            )
            assert signed_in.status_code == 200, signed_in.text
            assert signed_in.headers["strict-transport-security"] == HSTS
            session = _cookie(signed_in, SESSION_COOKIE)
            assert "secure" in session and "httponly" in session
            assert "secure" in _cookie(signed_in, CSRF_COOKIE)
            me = browser.get("/api/v1/me")
            assert me.status_code == 200, me.text
            assert me.json()["email"] == EMAIL
    logged = log.read_text()
    assert _says(logged, f"on https://{HOST}:{port} with 2 processes")
    assert "Traceback" not in logged


def test_https_with_one_process_refuses_tls12(settings: Settings, pem: Pem, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with _https_server(settings, pem, log, workers=1) as (port, base):
        _assert_tls12_refused(port, pem, attempts=2)
        assert _handshake(port, _client_context(pem)) == "TLSv1.3"
        health = httpx.get(f"{base}/healthz", verify=_client_context(pem), timeout=30)
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == HSTS
    logged = log.read_text()
    assert _says(logged, f"on https://{HOST}:{port} (data in")
    assert "Warning" not in logged  # the public URL is the https one


# -- files that cannot be served: exit 2, a message naming the file, no traceback --------------


def _refused(cli: Cli, *args: str, **env: str | None) -> str:
    result = cli.run("serve", "--port", str(_free_port()), "--workers", "1", *args, **env)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


def test_a_certificate_without_its_key_is_refused(cli: Cli, pem: Pem) -> None:
    said = _refused(cli, "--tls-cert", str(pem.cert))
    assert _says(said, "HTTPS needs both --tls-cert and --tls-key: --tls-key is missing")
    said = _refused(cli, "--tls-key", str(pem.key))
    assert _says(said, "--tls-cert is missing")


def test_a_key_of_another_certificate_is_refused(cli: Cli, pem: Pem) -> None:
    said = _refused(cli, "--tls-cert", str(pem.cert), "--tls-key", str(pem.other_key))
    assert _says(said, f"TLS key {pem.other_key} does not belong to the certificate in {pem.cert}")


def test_missing_and_wrong_files_are_named(cli: Cli, pem: Pem, tmp_path: Path) -> None:
    absent = tmp_path / "absent.pem"
    said = _refused(cli, "--tls-cert", str(absent), "--tls-key", str(pem.key))
    assert _says(said, f"TLS certificate file {absent} does not exist")
    said = _refused(cli, "--tls-cert", str(pem.cert), "--tls-key", str(absent))
    assert _says(said, f"TLS key file {absent} does not exist")
    # The key given as the certificate, and the certificate as the key.
    said = _refused(cli, "--tls-cert", str(pem.key), "--tls-key", str(pem.key))
    assert _says(said, f"TLS certificate {pem.key} is not a PEM certificate")
    said = _refused(cli, "--tls-cert", str(pem.cert), "--tls-key", str(pem.cert))
    assert _says(said, f"TLS key {pem.cert} is not a PEM private key")
    said = _refused(cli, "--tls-cert", str(pem.cert), "--tls-key", str(pem.encrypted_key))
    assert _says(said, "is protected by a passphrase")
    said = _refused(cli, "--tls-cert", str(tmp_path), "--tls-key", str(pem.key))
    assert _says(said, f"TLS certificate file {tmp_path} is a directory")


def test_the_files_may_come_from_the_environment(cli: Cli, pem: Pem) -> None:
    said = _refused(
        cli, LUNOGEN_TLS_CERT_FILE=str(pem.cert), LUNOGEN_TLS_KEY_FILE=str(pem.other_key)
    )
    assert _says(said, "does not belong to the certificate")
    said = _refused(cli, LUNOGEN_TLS_CERT_FILE=str(pem.cert))
    assert _says(said, "--tls-key is missing")


def test_a_refusal_from_a_real_process_has_no_traceback(settings: Settings, pem: Pem) -> None:
    result = subprocess.run(
        _lunogen(
            "serve",
            "--port",
            str(_free_port()),
            "--tls-cert",
            str(pem.cert),
            "--tls-key",
            str(pem.other_key),
        ),
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert _says(result.stderr, "does not belong to the certificate")
    assert "Traceback" not in result.stderr + result.stdout


def test_serving_tls_makes_cookies_secure_and_sends_hsts(settings: Settings, pem: Pem) -> None:
    assert not settings.secure_cookies  # http public URL, no TLS here
    half = settings.model_copy(update={"tls_cert_file": pem.cert})
    assert not half.serves_tls and not half.secure_cookies
    served = settings.model_copy(update={"tls_cert_file": pem.cert, "tls_key_file": pem.key})
    assert served.serves_tls and served.secure_cookies
    behind_proxy = settings.model_copy(update={"public_url": "https://agents.example"})
    assert behind_proxy.secure_cookies and not behind_proxy.serves_tls
