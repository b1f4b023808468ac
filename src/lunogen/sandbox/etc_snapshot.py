"""The /etc a sandbox sees: copies of the few host files programs need, never `shadow`.

Both backends bind one prebuilt snapshot directory read-only (one bind per file cost ~0.5 ms
each per run). A snapshot is named by a fingerprint of its sources, so a change on the host
makes a new one, and it is published by an atomic rename, so concurrent builders never race.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

ETC_FILES: tuple[str, ...] = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "host.conf",
    "protocols",
    "services",
    "mime.types",
    "inputrc",
    "bash.bashrc",
    "profile",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
)


def snapshot_path(parent: Path, seed: str) -> Path:
    """Where the snapshot of the current host files (and `seed`: generated content) lives."""
    key = hashlib.sha256(seed.encode())
    for name in ETC_FILES:
        with contextlib.suppress(OSError):
            st = os.stat(Path("/etc") / name)
            key.update(f"{name}:{st.st_mtime_ns}:{st.st_size};".encode())
    return parent / f"etc-{key.hexdigest()[:16]}"


def start_snapshot(parent: Path) -> Path:
    """A staging directory in `parent` holding copies of ETC_FILES (those that exist)."""
    staging = Path(tempfile.mkdtemp(prefix=".etc-", dir=parent))
    for name in ETC_FILES:
        source = Path("/etc") / name
        if not source.exists():
            continue
        dest = staging / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        elif source.is_dir():
            shutil.copytree(source, dest, symlinks=True)
        else:
            shutil.copy2(source, dest)
    return staging


def publish(staging: Path, target: Path) -> Path:
    """Make the finished `staging` directory `target`, unless another process already did."""
    for path in [staging, *staging.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target
