"""Unit tests of the AES-GCM key ring that encrypts secrets at rest."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunogen.kit.crypto import (
    KEY_FILE,
    CryptoError,
    Key,
    KeyRing,
    key_file,
    load_keyring,
    write_key_file,
)

RING = KeyRing([Key.generate()])


def _payload(token: str) -> bytes:
    payload = token.split(".", 2)[2]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def _with_payload(token: str, raw: bytes) -> str:
    prefix, key_id, _ = token.split(".", 2)
    return f"{prefix}.{key_id}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"


def test_round_trip_and_format() -> None:
    token = RING.encrypt("whsec_very-secret")
    assert token != "whsec_very-secret" and "very-secret" not in token
    prefix, key_id, _ = token.split(".", 2)
    assert prefix == "v1"
    assert key_id == RING.primary_id
    assert RING.decrypt(token) == "whsec_very-secret"
    # A fresh nonce every time: the same plaintext never gives the same ciphertext.
    assert RING.encrypt("whsec_very-secret") != token


@given(st.text())
def test_decrypt_inverts_encrypt(text: str) -> None:
    assert RING.decrypt(RING.encrypt(text)) == text


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20, -1])
def test_flipping_any_byte_is_detected(position: int) -> None:
    token = RING.encrypt("a secret value")
    raw = bytearray(_payload(token))
    raw[position] ^= 0x01
    with pytest.raises(CryptoError, match="failed authentication"):
        RING.decrypt(_with_payload(token, bytes(raw)))


def test_key_id_is_bound_to_the_ciphertext() -> None:
    """Relabelling a ciphertext with another key id of the ring fails authentication."""
    first, second = Key.generate(), Key.generate()
    same_material = Key(id="other", material=first.material)
    ring = KeyRing([first, second, same_material])
    token = ring.encrypt("x")
    relabelled = token.replace(f".{first.id}.", ".other.", 1)
    with pytest.raises(CryptoError, match="failed authentication"):
        ring.decrypt(relabelled)


def test_old_keys_still_decrypt_after_a_new_primary() -> None:
    old = Key.generate()
    old_ring = KeyRing([old])
    token = old_ring.encrypt("kept")
    new_ring = KeyRing([Key.generate(), old])
    assert new_ring.decrypt(token) == "kept"
    assert new_ring.needs_rotation(token)
    rotated = new_ring.reencrypt(token)
    assert rotated.split(".")[1] == new_ring.primary_id != old.id
    assert not new_ring.needs_rotation(rotated)
    assert new_ring.decrypt(rotated) == "kept"
    with pytest.raises(CryptoError, match="no key"):
        old_ring.decrypt(rotated)


def test_unknown_key_id() -> None:
    token = KeyRing([Key.generate()]).encrypt("x")
    with pytest.raises(CryptoError, match=f"no key '{token.split('.')[1]}'"):
        RING.decrypt(token)


def test_wrong_key_with_the_same_id_fails() -> None:
    impostor = KeyRing([Key(id=RING.primary_id, material=Key.generate().material)])
    with pytest.raises(CryptoError, match="failed authentication"):
        impostor.decrypt(RING.encrypt("x"))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("plaintext", "not an encrypted value"),
        ("", "not an encrypted value"),
        ("v2.abc.AAAA", "unknown ciphertext version"),
        ("v1.{id}.", "truncated"),
        ("v1.{id}.AAAAAAAA", "truncated"),
        ("v1.{id}.A", "not valid base64url"),
    ],
)
def test_malformed_tokens_raise_crypto_error(token: str, message: str) -> None:
    token = token.format(id=RING.primary_id)
    with pytest.raises(CryptoError, match=message):
        RING.decrypt(token)
    with pytest.raises(CryptoError):
        RING.needs_rotation(token)


def test_truncated_ciphertext_is_detected() -> None:
    token = RING.encrypt("a secret value")
    with pytest.raises(CryptoError):
        RING.decrypt(token[:-4])


def test_key_spec_round_trip() -> None:
    key = Key.generate()
    assert len(key.material) == 32
    assert Key.parse(key.spec()) == key
    assert Key.parse(f"  {key.spec()}\n") == key
    ring = KeyRing([key, Key.generate()])
    parsed = KeyRing.parse(ring.specs())
    assert [k.id for k in parsed.keys] == [k.id for k in ring.keys]
    assert parsed.decrypt(ring.encrypt("x")) == "x"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon-here", "must look like"),
        (":AAAA", "must look like"),
        ("bad.id:" + "A" * 43, "must look like"),
        ("k1:" + base64.urlsafe_b64encode(b"x" * 16).decode(), "must be 32 bytes"),
        ("k1:" + base64.urlsafe_b64encode(b"x" * 33).decode(), "must be 32 bytes"),
        ("k1:A", "not valid base64url"),
    ],
)
def test_key_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(CryptoError, match=message):
        Key.parse(spec)


def test_key_ring_errors() -> None:
    with pytest.raises(CryptoError, match="at least one key"):
        KeyRing([])
    with pytest.raises(CryptoError, match="at least one key"):
        KeyRing.parse(" , ")
    key = Key.generate()
    with pytest.raises(CryptoError, match="duplicate"):
        KeyRing([key, Key(id=key.id, material=Key.generate().material)])


def test_key_file_is_generated_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    first = load_keyring(None, data_dir)
    path = key_file(data_dir)
    assert path == data_dir / KEY_FILE and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first.specs()
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary files left

    second = load_keyring(None, data_dir)
    assert second.specs() == first.specs()
    assert second.decrypt(first.encrypt("x")) == "x"


def test_secret_keys_setting_wins_over_the_key_file(tmp_path: Path) -> None:
    from_file = load_keyring(None, tmp_path)
    env_key = Key.generate()
    ring = load_keyring(env_key.spec(), tmp_path)
    assert ring.primary_id == env_key.id != from_file.primary_id
    empty = tmp_path / "elsewhere"
    load_keyring(env_key.spec(), empty)
    assert not empty.exists() or not key_file(empty).exists()


def test_write_key_file_replaces_with_mode_0600(tmp_path: Path) -> None:
    ring = KeyRing([Key.generate(), Key.generate()])
    write_key_file(tmp_path, ring)
    path = key_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(None, tmp_path).specs() == ring.specs()
    write_key_file(tmp_path, KeyRing([ring.keys[0]]))
    assert load_keyring(None, tmp_path).specs() == ring.keys[0].spec()
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_broken_key_file_is_an_error(tmp_path: Path) -> None:
    key_file(tmp_path).write_text("garbage\n")
    with pytest.raises(CryptoError):
        load_keyring(None, tmp_path)


def test_concurrent_first_runs_agree_on_one_key(tmp_path: Path) -> None:
    rings: list[KeyRing] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        rings.append(load_keyring(None, tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.specs() for r in rings}) == 1
    assert rings[0].specs() == key_file(tmp_path).read_text().strip()


def test_a_file_ring_follows_a_rotation_done_by_another_process(tmp_path: Path) -> None:
    from lunogen.kit.crypto import Key, KeyRing, load_keyring, write_key_file

    server_ring = load_keyring(None, tmp_path)
    old_token = server_ring.encrypt("before")
    rotated = KeyRing([Key.generate(), *server_ring.keys])
    write_key_file(tmp_path, rotated)
    new_token = rotated.encrypt("after")

    assert server_ring.decrypt(new_token) == "after"
    assert server_ring.primary_id == rotated.primary_id
    assert server_ring.decrypt(old_token) == "before"


def test_an_env_ring_does_not_reload(tmp_path: Path) -> None:
    from lunogen.kit.crypto import CryptoError, Key, KeyRing

    ring = KeyRing([Key.generate()])
    other = KeyRing([Key.generate()])
    with pytest.raises(CryptoError, match="no key"):
        ring.decrypt(other.encrypt("x"))
