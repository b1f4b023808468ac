"""Code and file tools: `run_code`, `read_file`, `write_file`, `list_files`.

They act only inside the agent's LunoEdge workspace (`ToolContext.edge`): code runs in the
sandbox backend with the owner's plan limits; file paths are confined to the workspace
(traversal and symlink escapes are refused by `sandbox.workspace`). Every run is written to
the agent's runtime log at once, in a transaction of its own, with its duration and any limit
hit. Tools never raise: problems come back as a string starting with "Error:".
"""

from __future__ import annotations

from typing import Any

import structlog

from lunogen.runlog.logs import log_event
from lunogen.sandbox.base import RunResult, SandboxLimits
from lunogen.sandbox.edge import LunoEdge
from lunogen.sandbox.workspace import WorkspaceError
from lunogen.tool.registry import ToolContext, ToolSpec, registry

log = structlog.get_logger(__name__)

MAX_CODE_CHARS = 100_000
MAX_WRITE_BYTES = 1_000_000
READ_MAX_CHARS = 7_000
OUTPUT_BUDGET_CHARS = 7_000  # below the turn's 8 000-character cap on a tool result
LIST_LIMIT = 500
# The longest wall time of any plan, plus time to start and clean up the sandbox.
RUN_TIMEOUT_SECONDS = 150.0

LANGUAGES: dict[str, list[str]] = {"python": ["python3", "-c"], "bash": ["bash", "-c"]}
LIMIT_WORDS = {
    "wall_time": "it ran past the wall-time limit of {wall:g} s",
    "cpu_time": "it used more than {cpu} s of CPU",
    "memory": "it used more than the memory limit of {memory} MB",
    "processes": "it started more than {processes} processes",
    "file_size": "it wrote a file larger than {file_size} MB",
    "disk_quota": "the workspace went past its quota of {quota} MB",
    "output": "its output went past {output} bytes; the rest was dropped",
}


def _sandbox(context: ToolContext) -> tuple[LunoEdge, SandboxLimits] | str:
    if context.edge is None or context.sandbox_limits is None:
        problem = context.sandbox_problem or "no sandbox is configured on this server"
        return f"Error: code and file tools are not available: {problem}."
    return context.edge, context.sandbox_limits


def _describe_limit(result: RunResult, limits: SandboxLimits) -> str:
    if result.limit_hit is None:
        return ""
    return LIMIT_WORDS[result.limit_hit].format(
        wall=limits.wall_seconds,
        cpu=limits.cpu_seconds,
        memory=limits.memory_mb,
        processes=limits.processes,
        file_size=limits.file_size_mb,
        quota=limits.workspace_mb,
        output=limits.output_bytes,
    )


def _clip(text: str, budget: int) -> str:
    """Head and tail of `text` within `budget` characters, with a marker where it was cut."""
    if len(text) <= budget:
        return text
    half = max(budget // 2 - 40, 0)
    dropped = len(text) - 2 * half
    return f"{text[:half]}\n[… {dropped} characters truncated …]\n{text[-half:]}"


def format_run(result: RunResult, limits: SandboxLimits) -> str:
    """What the model reads back from `run_code`."""
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    exit_text = "killed" if result.exit_code is None else str(result.exit_code)
    lines = [f"exit code: {exit_text} ({result.duration_ms:.0f} ms)"]
    stopped = _describe_limit(result, limits)
    if stopped:
        lines.append(f"stopped: {stopped}")
    budget = OUTPUT_BUDGET_CHARS
    if stderr:
        budget = max(OUTPUT_BUDGET_CHARS - min(len(stderr), OUTPUT_BUDGET_CHARS // 3), 0)
    lines.append("stdout:\n" + (_clip(stdout, budget) if stdout else "(empty)"))
    if stderr:
        lines.append("stderr:\n" + _clip(stderr, OUTPUT_BUDGET_CHARS - budget))
    if result.truncated:
        lines.append(f"[output truncated at {limits.output_bytes} bytes per stream]")
    return "\n".join(lines)


async def _log_run(
    context: ToolContext, *, language: str, result: RunResult, backend: str, limits: SandboxLimits
) -> None:
    stopped = _describe_limit(result, limits)
    message = f"run_code ({language}) exited {result.exit_code} in {result.duration_ms:.0f} ms"
    if stopped:
        message += f"; stopped: {stopped}"
    details: dict[str, Any] = {
        "language": language,
        "backend": backend,
        "exit_code": result.exit_code,
        "duration_ms": round(result.duration_ms, 1),
        "limit_hit": result.limit_hit,
        "truncated": result.truncated,
    }
    if context.sessionmaker is None:
        log.info("sandbox_run_unlogged", agent_id=context.agent_id, **details)
        return
    async with context.sessionmaker() as session:
        log_event(
            session,
            agent_id=context.agent_id,
            event="sandbox.run",
            message=message,
            level="warning" if result.limit_hit else "info",
            details=details,
        )
        await session.commit()


async def run_code(context: ToolContext, args: dict[str, Any]) -> str:
    sandbox = _sandbox(context)
    if isinstance(sandbox, str):
        return sandbox
    edge, limits = sandbox
    language = args.get("language", "python")
    if language not in LANGUAGES:
        return "Error: `language` must be 'python' or 'bash'."
    code = args.get("code")
    if not isinstance(code, str) or not code.strip():
        return "Error: the argument `code` (the program to run) is required."
    if len(code) > MAX_CODE_CHARS or "\x00" in code:
        return f"Error: `code` must be text of at most {MAX_CODE_CHARS} characters."
    stdin = args.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        return "Error: `stdin` must be a string."
    result = await edge.run(
        context.agent_id,
        [*LANGUAGES[language], code],
        limits=limits,
        stdin=stdin.encode() if stdin else None,
    )
    await _log_run(
        context, language=language, result=result, backend=edge.backend_name, limits=limits
    )
    return format_run(result, limits)


async def read_file(context: ToolContext, args: dict[str, Any]) -> str:
    sandbox = _sandbox(context)
    if isinstance(sandbox, str):
        return sandbox
    edge, _ = sandbox
    path = args.get("path")
    if not isinstance(path, str) or not path:
        return "Error: the argument `path` (relative to the workspace) is required."
    try:
        data = await edge.read_file(context.agent_id, path, max_bytes=4 * READ_MAX_CHARS + 4)
    except WorkspaceError as exc:
        return f"Error: {exc}"
    if b"\x00" in data[:4096]:
        return f"Error: {path} is a binary file; use run_code to inspect it."
    text = data.decode("utf-8", "replace")
    if len(text) > READ_MAX_CHARS:
        return text[:READ_MAX_CHARS] + f"\n[… truncated at {READ_MAX_CHARS} characters]"
    return text


async def write_file(context: ToolContext, args: dict[str, Any]) -> str:
    sandbox = _sandbox(context)
    if isinstance(sandbox, str):
        return sandbox
    edge, limits = sandbox
    path, content = args.get("path"), args.get("content")
    if not isinstance(path, str) or not path:
        return "Error: the argument `path` (relative to the workspace) is required."
    if not isinstance(content, str):
        return "Error: the argument `content` (the text to write) is required."
    data = content.encode("utf-8", "replace")
    if len(data) > MAX_WRITE_BYTES:
        return f"Error: write_file takes at most {MAX_WRITE_BYTES} bytes; use run_code."
    try:
        await edge.write_file(context.agent_id, path, data, limits=limits)
    except WorkspaceError as exc:
        return f"Error: {exc}"
    return f"Wrote {len(data)} bytes to {path}."


async def list_files(context: ToolContext, args: dict[str, Any]) -> str:
    sandbox = _sandbox(context)
    if isinstance(sandbox, str):
        return sandbox
    edge, _ = sandbox
    path = args.get("path") or "."
    if not isinstance(path, str):
        return "Error: `path` must be a string."
    recursive = bool(args.get("recursive", False))
    try:
        entries = await edge.list_files(
            context.agent_id, path, recursive=recursive, limit=LIST_LIMIT + 1
        )
    except WorkspaceError as exc:
        return f"Error: {exc}"
    if not entries:
        return f"{path} is empty."
    lines = [
        f"{entry.path}/" if entry.is_dir else f"{entry.path} ({entry.size} bytes)"
        for entry in entries[:LIST_LIMIT]
    ]
    if len(entries) > LIST_LIMIT:
        lines.append(f"[… more than {LIST_LIMIT} entries; list a subdirectory]")
    return "\n".join(lines)


_PATH = {"type": "string", "description": "Path relative to the workspace, e.g. 'data/out.csv'"}

registry.register(
    ToolSpec(
        name="run_code",
        description=(
            "Run a Python 3 or bash program in your private sandbox (no network, limited CPU, "
            "memory and time). The working directory is your workspace, which keeps files "
            "between runs. Returns the exit code, stdout and stderr."
        ),
        parameters={
            "type": "object",
            "properties": {
                "language": {"type": "string", "enum": sorted(LANGUAGES)},
                "code": {"type": "string", "description": "The program's source"},
                "stdin": {"type": "string", "description": "Text given on standard input"},
            },
            "required": ["language", "code"],
            "additionalProperties": False,
        },
        run=run_code,
        tags=("sandbox",),
        timeout_seconds=RUN_TIMEOUT_SECONDS,
        requires_approval=True,
    )
)
registry.register(
    ToolSpec(
        name="read_file",
        description="Read a text file from your workspace.",
        parameters={
            "type": "object",
            "properties": {"path": _PATH},
            "required": ["path"],
            "additionalProperties": False,
        },
        run=read_file,
        tags=("sandbox",),
    )
)
registry.register(
    ToolSpec(
        name="write_file",
        description="Create or replace a text file in your workspace (parent folders are made).",
        parameters={
            "type": "object",
            "properties": {"path": _PATH, "content": {"type": "string"}},
            "required": ["path", "content"],
            "additionalProperties": False,
        },
        run=write_file,
        tags=("sandbox",),
    )
)
registry.register(
    ToolSpec(
        name="list_files",
        description="List the files in your workspace, or in one of its folders.",
        parameters={
            "type": "object",
            "properties": {
                "path": {**_PATH, "description": "Folder relative to the workspace; default '.'"},
                "recursive": {"type": "boolean", "description": "Include subfolders"},
            },
            "additionalProperties": False,
        },
        run=list_files,
        tags=("sandbox",),
    )
)
