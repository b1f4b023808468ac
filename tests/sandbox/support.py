"""What sandbox tests share beyond fixtures: the required-sandboxes switch, and mount hygiene.

LUNOGEN_TEST_REQUIRE_SANDBOXES (comma list, set by CI) names what must work on this machine:
`bwrap`, `gvisor` (backends) and `kernel-quota` (workspace quotas by a loop-mounted ext4 image,
which needs root and loop devices). A named one that is unavailable FAILS its tests with the
reason; anything not named is skipped with the reason instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from lunogen.sandbox.diskimage import IMAGES_DIR
from lunogen.sandbox.workspace import Workspace

REQUIRE_ENV = "LUNOGEN_TEST_REQUIRE_SANDBOXES"
KERNEL_QUOTA = "kernel-quota"


def required() -> set[str]:
    return {name.strip() for name in os.environ.get(REQUIRE_ENV, "").split(",") if name.strip()}


def unavailable(name: str, reason: str) -> NoReturn:
    if name in required():
        pytest.fail(f"{name} is required here ({REQUIRE_ENV}) but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


def mounts_under(base: Path) -> list[Path]:
    """Mount points at or below `base` in this process's mount namespace, deepest first."""
    prefix = str(base.resolve())
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4]
            for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n")):
                point = point.replace(escaped, char)
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def release_workspaces(base: Path) -> None:
    """Destroy every workspace a test left under `base`: whatever is still mounted, and every
    workspace in `base/workspaces` or `base/data/workspaces`. Trees sandboxed code made (a
    chain thousands deep) would break pytest's own recursive clean-up of old temp dirs."""
    for point in mounts_under(base):
        Workspace(point).destroy()
    for parent in (base / "workspaces", base / "data" / "workspaces"):
        if parent.is_dir() and not parent.is_symlink():
            for child in parent.iterdir():
                if child.name != IMAGES_DIR:
                    Workspace(child).destroy()
