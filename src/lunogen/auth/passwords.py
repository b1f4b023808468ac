"""Password rules, and argon2id hashing off the event loop.

A hash or a check costs ~0.2 s of CPU and 64 MiB (the production profile), so it runs on a
pool of its own with one thread per CPU: argon2-cffi releases the GIL during the C call, so the
event loop keeps serving and the calls run in parallel, while a burst of sign-ins queues for the
pool instead of taking 64 MiB each at once. Callers must hold no write transaction meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


HASHING_THREADS = _cpu_count()


def _new_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="argon2")


_pool = _new_pool()


def _replace_pool_after_fork() -> None:
    # A forked child has none of the parent's threads, but the pool would count them as idle.
    global _pool
    _pool = _new_pool()


os.register_at_fork(after_in_child=_replace_pool_after_fork)

MIN_LENGTH = 10
MAX_LENGTH = 256
_COMMON = frozenset(
    {
        "password123",
        "password1234",
        "1234567890",
        "qwertyuiop",
        "letmein123",
        "iloveyou12",
        "welcome123",
        "administrator",
        "passw0rd123",
        "abcdefghij",
    }
)


def password_problem(password: str, *, email: str = "", name: str = "") -> str | None:
    """Why a password is too weak, or None. NIST 800-63B style: length, not composition."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    lowered = password.lower()
    if lowered in _COMMON or len(set(password)) < 4:
        return "is too common or repetitive"
    local = email.split("@", 1)[0].lower()
    if local and len(local) >= 4 and local in lowered:
        return "must not contain your email address"
    if name and len(name) >= 4 and name.lower() in lowered:
        return "must not contain your name"
    return None


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_pool, _hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; for no hash, False after spending the same time."""
    return await asyncio.get_running_loop().run_in_executor(_pool, _verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters (cheap: it only reads them)."""
    return _hasher.check_needs_rehash(password_hash)


def _hash(password: str) -> str:
    return _hasher.hash(password)


def _verify(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        # Spend the same time as a real check so unknown accounts are not revealed by timing.
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
