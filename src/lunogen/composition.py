"""The composition root of the job side: imports every module that registers something with
the worker, so that a process started from here (`create_app`, `lunogen worker`) has it all.

The worker package imports no domain: the domains register with it when imported
(`worker.resources`: what a process opens; `worker.maintenance`: periodic steps;
`worker.sweeps`: what the sweeper re-enqueues; `worker.broker.job`: job handlers, which a
`lunogen worker` process must know by name before it consumes). This module is that import.
"""

from __future__ import annotations

# Each import registers what its comment says (imported for that effect only).
from lunogen.agent import workspace  # noqa: F401  job: sandbox.destroy_workspace
from lunogen.billing import worker_parts as billing_parts  # noqa: F401  periodic: holds, costs
from lunogen.channel import kinds  # noqa: F401  channel types; their jobs and sweeps
from lunogen.llm import worker_parts as llm_parts  # noqa: F401  model client; catalog refresh
from lunogen.moderation import hooks as moderation  # noqa: F401  screening; export section
from lunogen.moderation import tasks as moderation_tasks  # noqa: F401  job, sweep, queue
from lunogen.notification import email  # noqa: F401  job: notification.send_email; sweep
from lunogen.privacy import export as privacy_export  # noqa: F401  job: privacy.build_export
from lunogen.privacy import (
    export_mcp,  # noqa: F401  export section: mcp_servers
    policy_notice,  # noqa: F401  job: privacy.notify_policy_change
)
from lunogen.privacy import tasks as privacy_tasks  # noqa: F401  periodic: purge; Stripe job
from lunogen.runlog import logs as runlog  # noqa: F401  resource: log bus; periodic: log purge
from lunogen.runtime import (
    events,  # noqa: F401  resource: turn events
    tasks,  # noqa: F401  job: runtime.run_thread; sweep: threads with due work
)
from lunogen.schedule import export as schedule_export  # noqa: F401  export section: schedules
from lunogen.schedule import scheduler  # noqa: F401  resource + periodic: the schedule loop
