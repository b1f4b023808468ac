"""Sandbox run overhead: a trivial command through each LunoEdge backend against a bare subprocess.

    .venv/bin/python bench/sandbox_overhead.py                 # 200 runs of each command
    .venv/bin/python bench/sandbox_overhead.py --runs 1000
    .venv/bin/python bench/sandbox_overhead.py --backends bwrap --check
    .venv/bin/python bench/sandbox_overhead.py --quota watcher --files 9000

For each command (`/bin/true`, `python3 -c pass`) the script runs it N times as a bare
`asyncio.create_subprocess_exec` (output piped, as LunoEdge does) and N times through
`LunoEdge.run` with each backend that can run here, interleaved round by round so that load on
the machine hits every variant alike. Overhead = backend p50 - bare p50. The target (issue 11)
is bwrap at p50 ≤ 10 ms; `--check` exits 1 when that is missed.

`--quota` picks how workspace quotas hold (LUNOGEN_SANDBOX_QUOTA: the kernel's loop-mounted
image, or the watcher's polling); the first run of each backend, which makes the image in the
kernel mode, is timed apart. `--files N` fills the workspace with N empty files first: the
watcher's check before and after each run walks them, the kernel mode's is one statfs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lunogen.account.plans import limits_for
from lunogen.sandbox import LunoEdge
from lunogen.sandbox.backends import BACKENDS, backend_class
from lunogen.sandbox.edge import backend_unavailable_reason

TARGET_P50_OVERHEAD_MS = 10.0
COMMANDS: dict[str, list[str]] = {
    "/bin/true": ["/bin/true"],
    "python3 -c pass": ["python3", "-c", "pass"],
}
LIMITS = limits_for("free").sandbox  # the smallest plan a run can have


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bare(argv: list[str], cwd: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
    )
    await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bare {argv} exited {proc.returncode}")


async def main(args: argparse.Namespace) -> int:
    console = Console()
    names = [n for n in (args.backends or list(BACKENDS))]
    edges: dict[str, LunoEdge] = {}
    tmp = Path(tempfile.mkdtemp(prefix="lunogen-bench-"))
    first_runs: dict[str, float] = {}
    for name in names:
        reason = backend_unavailable_reason(name)
        if reason is not None:
            console.print(f"[yellow]{name}: unavailable ({reason})[/yellow]")
            continue
        edge = LunoEdge(workspaces_dir=tmp / name, backend=backend_class(name)(), quota=args.quota)
        edges[name] = edge
        await edge.provision("bench-agent", limits=LIMITS)
        started = time.perf_counter()
        await edge.run("bench-agent", ["/bin/true"], limits=LIMITS)
        first_runs[name] = (time.perf_counter() - started) * 1000
        if args.files:
            fill = f"import os\nos.mkdir('f')\nfor i in range({args.files}): open(f'f/{{i}}', 'w')"
            made = await edge.run("bench-agent", ["python3", "-c", fill], limits=LIMITS)
            if made.exit_code != 0:
                raise RuntimeError(f"{name}: could not make {args.files} files: {made}")
    bare_dir = tmp / "bare"
    bare_dir.mkdir()

    samples: dict[tuple[str, str], list[float]] = {}
    variants = ["bare", *edges]
    total = len(COMMANDS) * len(variants) * (args.runs + args.warmup)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Running", total=total)
        for label, argv in COMMANDS.items():
            for i in range(args.runs + args.warmup):
                for variant in variants:
                    started = time.perf_counter()
                    if variant == "bare":
                        await bare(argv, str(bare_dir))
                    else:
                        result = await edges[variant].run("bench-agent", argv, limits=LIMITS)
                        if result.exit_code != 0:
                            raise RuntimeError(f"{variant} {argv}: {result}")
                    elapsed = (time.perf_counter() - started) * 1000
                    if i >= args.warmup:
                        samples.setdefault((label, variant), []).append(elapsed)
                    progress.advance(task)

    table = Table(title=f"Sandbox run overhead ({args.runs} runs each)")
    for column in ("command", "variant", "p50 ms", "p99 ms", "ratio p50", "overhead p50 ms"):
        table.add_column(column, justify="right" if "ms" in column or "ratio" in column else "left")
    missed = False
    for label in COMMANDS:
        base = statistics.median(samples[(label, "bare")])
        for variant in variants:
            values = samples[(label, variant)]
            p50 = statistics.median(values)
            over = p50 - base
            if variant == "bwrap" and over > TARGET_P50_OVERHEAD_MS:
                missed = True
            table.add_row(
                label,
                variant,
                f"{p50:.2f}",
                f"{pct(values, 0.99):.2f}",
                f"{p50 / base:.2f}x",
                "" if variant == "bare" else f"{over:+.2f}",
            )
    console.print(table)
    for name, edge in edges.items():
        launch = getattr(edge.backend, "launcher", None)
        console.print(
            f"{name}: workspace quota by the {edge.quota_mode}; first run (makes the image in "
            f"the kernel mode) {first_runs[name]:.1f} ms; {args.files} files in the workspace"
            + ("" if name != "bwrap" else f"; setup by the {'helper' if launch else 'exec chain'}")
        )
    load = os.getloadavg()
    console.print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"target: bwrap overhead p50 ≤ {TARGET_P50_OVERHEAD_MS:.0f} ms"
        + (" — [red]MISSED[/red]" if missed else "")
    )
    for edge in edges.values():
        await edge.destroy("bench-agent")
    return 1 if (missed and args.check) else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="measured runs per variant")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured runs first")
    parser.add_argument("--backends", nargs="*", choices=list(BACKENDS), help="default: all")
    parser.add_argument("--check", action="store_true", help="exit 1 when the budget is missed")
    parser.add_argument(
        "--quota",
        choices=["auto", "kernel", "watcher"],
        default="auto",
        help="how workspace quotas hold (LUNOGEN_SANDBOX_QUOTA)",
    )
    parser.add_argument(
        "--files",
        type=int,
        default=0,
        help="empty files in the workspace (the Free plan allows 10000 entries)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sys.exit(asyncio.run(main(parse_args())))
