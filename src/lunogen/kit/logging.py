from __future__ import annotations

import logging
import sys

import structlog

# Libraries whose DEBUG and INFO lines can carry what must never be logged: the database drivers
# print statements with their parameters (password hashes, emails), the openai client request
# bodies (message text), httpx every URL (some providers put tokens in the path). They log at
# WARNING or above whatever the level; so does taskiq, which would print a line per job. (SQLAlchemy
# already keeps its own loggers at WARNING.)
_LIBRARIES_AT_WARNING = (
    "aiosqlite",
    "asyncpg",
    "openai",
    "httpx",
    "httpcore",
    "stripe",
    "taskiq",
)


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured: a
    stream replaced since (a test's capture, a daemon's redirect) is never written to after
    it was closed. Each record reaches it as one write with its newline (structlog's WriteLogger,
    not PrintLogger's two): a record and a thread's or the standard library's line can then never
    run together on one line, and children appending to one file each write whole lines."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _CurrentStderr()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """structlog to stderr: JSON lines in production, readable lines in a terminal."""
    logging.basicConfig(format="%(message)s", stream=_STDERR, level=level.upper(), force=True)
    for name in _LIBRARIES_AT_WARNING:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.WriteLoggerFactory(_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
