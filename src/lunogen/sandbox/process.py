"""The `process` backend: a plain subprocess in the workspace directory. NOT isolated.

For development on machines without bwrap or runsc: the command sees the host's files, network
and processes with the platform's own user id. It still gets the run limits (rlimits, cgroups
where writable, a new session killed at the wall time, output caps), so that tools behave as
they will in production. Never chosen by "auto".
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from lunogen.sandbox.base import Backend, RunResult, SandboxLimits
from lunogen.sandbox.limits import Cgroups, RunCgroup, rlimits
from lunogen.sandbox.runner import Launch, starting_fsize, supervise
from lunogen.sandbox.workspace import Workspace

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class ProcessBackend(Backend):
    name: ClassVar[str] = "process"
    isolated: ClassVar[bool] = False

    def __init__(self) -> None:
        self.cgroups = Cgroups()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    async def run(
        self,
        workspace: Path,
        argv: Sequence[str],
        *,
        limits: SandboxLimits,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        run_id: str,
    ) -> RunResult:
        if not argv:
            raise ValueError("argv is empty")
        space = Workspace(workspace)
        space.ensure()
        fsize = await starting_fsize(space, limits)
        cgroup: RunCgroup | None = None
        if self.cgroups.available:
            try:
                cgroup = self.cgroups.create(run_id, limits)
            except OSError:
                cgroup = None
        # RLIMIT_NPROC counts every process and thread of the platform's user: not usable here
        # (the pids cgroup bounds a run when it exists).
        limit_list = rlimits(limits, fsize_bytes=fsize, nproc=None)

        def preexec() -> None:
            if cgroup is not None:
                cgroup.join_in_child()
            for which, values in limit_list:
                resource.setrlimit(which, values)

        merged = {"LANG": "C.UTF-8", **(env or {})}
        merged.update(PATH=SAFE_PATH, HOME=str(workspace), TMPDIR=str(workspace))
        launch = Launch(
            argv=list(argv),
            env=merged,
            cwd=str(workspace),
            preexec=preexec,
            fsize_bytes=fsize,
            cgroup=cgroup,
        )
        try:
            return await supervise(launch, workspace=space, limits=limits, stdin=stdin)
        finally:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
