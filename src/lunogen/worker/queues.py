"""The durable queues' registry: each domain names the table whose rows are its queue.

Work that leaves the process (turns, deliveries, emails, unregistrations, cancellations) is a
row claimed by a job, so the rows *are* the queue: the statuses in `pending` still wait or are
in work, those in `failed` gave up after their retries. The admin's system health counts every
registered queue without naming a domain.
"""

from __future__ import annotations

from dataclasses import dataclass

from lunogen.db import Base


@dataclass(frozen=True)
class Queue:
    name: str
    description: str
    model: type[Base]
    pending: tuple[str, ...]
    failed: tuple[str, ...] = ("failed",)


_queues: dict[str, Queue] = {}


def register_queue(queue: Queue) -> None:
    _queues[queue.name] = queue


def registered_queues() -> list[Queue]:
    return list(_queues.values())
