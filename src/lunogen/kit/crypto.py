"""Secrets at rest: AES-256-GCM under a key ring.

Ciphertext format (text, safe for any column): ``v1.<key_id>.<base64url(nonce + ciphertext+tag)>``.
The first key of the ring encrypts; every key decrypts, so a rotation can add a new key first
and re-encrypt at leisure. The key id is bound into the GCM associated data.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1"
KEY_FILE = "secret_keys"
NONCE_BYTES = 12
TAG_BYTES = 16


class CryptoError(Exception):
    pass


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _split(token: str) -> tuple[str, bytes]:
    """The key id and the raw nonce + ciphertext + tag of a ``v1.<key_id>.<payload>`` token."""
    try:
        prefix, key_id, payload = token.split(".", 2)
    except ValueError as exc:
        raise CryptoError("not an encrypted value") from exc
    if prefix != PREFIX:
        raise CryptoError("unknown ciphertext version")
    try:
        raw = _b64d(payload)
    except ValueError as exc:
        raise CryptoError("ciphertext is not valid base64url") from exc
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError("ciphertext is truncated")
    return key_id, raw


@dataclass(frozen=True)
class Key:
    id: str
    material: bytes

    @classmethod
    def generate(cls) -> Key:
        material = AESGCM.generate_key(bit_length=256)
        return cls(id=hashlib.sha256(material).hexdigest()[:8], material=material)

    @classmethod
    def parse(cls, spec: str) -> Key:
        """Parse ``<id>:<base64url 32 bytes>``."""
        key_id, sep, encoded = spec.strip().partition(":")
        if not sep or not key_id.isalnum():
            raise CryptoError("each secret key must look like '<id>:<base64url of 32 bytes>'")
        try:
            material = _b64d(encoded)
        except ValueError as exc:
            raise CryptoError(f"secret key {key_id!r} is not valid base64url") from exc
        if len(material) != 32:
            raise CryptoError(f"secret key {key_id!r} must be 32 bytes (AES-256)")
        return cls(id=key_id, material=material)

    def spec(self) -> str:
        return f"{self.id}:{_b64e(self.material)}"


class KeyRing:
    """Keys by id. A ring read from the data-dir key file (`source`) re-reads that file when it
    meets a key id it does not know, so a running server follows `lunogen secrets rotate`."""

    def __init__(self, keys: list[Key], *, source: Path | None = None) -> None:
        self.source = source
        self._set_keys(keys)

    def _set_keys(self, keys: list[Key]) -> None:
        if not keys:
            raise CryptoError("the key ring needs at least one key")
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise CryptoError("duplicate key ids in the key ring")
        self.keys = keys
        self._by_id = {k.id: AESGCM(k.material) for k in keys}

    def reload(self) -> bool:
        """Adopt the key file's current keys; True when they changed."""
        if self.source is None or not self.source.exists():
            return False
        fresh = KeyRing.parse(self.source.read_text())
        if [k.id for k in fresh.keys] == [k.id for k in self.keys]:
            return False
        self._set_keys(fresh.keys)
        return True

    @property
    def primary_id(self) -> str:
        return self.keys[0].id

    @classmethod
    def parse(cls, specs: str, *, source: Path | None = None) -> KeyRing:
        return cls([Key.parse(s) for s in specs.split(",") if s.strip()], source=source)

    def specs(self) -> str:
        return ",".join(k.spec() for k in self.keys)

    def encrypt(self, plaintext: str) -> str:
        key_id = self.primary_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._by_id[key_id].encrypt(nonce, plaintext.encode(), key_id.encode())
        return f"{PREFIX}.{key_id}.{_b64e(nonce + sealed)}"

    def decrypt(self, token: str) -> str:
        key_id, raw = _split(token)
        aead = self._by_id.get(key_id)
        if aead is None and self.reload():
            aead = self._by_id.get(key_id)
        if aead is None:
            raise CryptoError(f"no key {key_id!r} in the key ring")
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode()).decode()
        except InvalidTag as exc:
            raise CryptoError("ciphertext failed authentication") from exc

    def needs_rotation(self, token: str) -> bool:
        return _split(token)[0] != self.primary_id

    def reencrypt(self, token: str) -> str:
        return self.encrypt(self.decrypt(token))


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def load_keyring(secret_keys: str | None, data_dir: Path) -> KeyRing:
    """The ring from ``LUNOGEN_SECRET_KEYS``, else from the data dir, generating it on first run."""
    if secret_keys:
        return KeyRing.parse(secret_keys)
    path = key_file(data_dir)
    if not path.exists():
        # Two processes starting at once on a fresh data dir must end up with the same key.
        tmp = _write_tmp(data_dir, KeyRing([Key.generate()]))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem
            if not path.exists():
                tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return KeyRing.parse(path.read_text(), source=path)


def write_key_file(data_dir: Path, ring: KeyRing) -> None:
    """Replace the key file atomically (mode 0600)."""
    _write_tmp(data_dir, ring).replace(key_file(data_dir))


def _write_tmp(data_dir: Path, ring: KeyRing) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(ring.specs() + "\n")
    os.chmod(tmp, 0o600)
    return tmp
