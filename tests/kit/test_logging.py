"""Every log record is one line, whatever else writes to stderr at the same moment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_WRITERS = """
import logging, threading
import structlog
from lunogen.kit.logging import configure_logging

configure_logging("INFO", json=True)
log = structlog.get_logger()
plain = logging.getLogger("plain")

def structured(n):
    for i in range(2000):
        log.info("agent_log", writer=n, i=i, text="x" * 200)

def library():
    for i in range(2000):
        plain.warning("not json %d", i)

threads = [threading.Thread(target=structured, args=(n,)) for n in range(3)]
threads.append(threading.Thread(target=library))
for t in threads: t.start()
for t in threads: t.join()
"""


def test_lines_from_threads_and_the_standard_library_never_run_together(tmp_path: Path) -> None:
    output = tmp_path / "stderr.log"
    with output.open("ab") as stderr:  # appended, as a supervisor's children share one file
        subprocess.run([sys.executable, "-c", _WRITERS], stderr=stderr, check=True, timeout=60)

    structured = plain = 0
    for line in output.read_text().splitlines():
        if line.startswith("{"):
            assert json.loads(line)["event"] == "agent_log", line
            structured += 1
        else:
            assert line.startswith("not json "), line
            plain += 1
    assert (structured, plain) == (6000, 2000)
