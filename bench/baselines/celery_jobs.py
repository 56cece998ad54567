"""The Celery 5 baseline: a no-op task on the local Redis (db 14, the benchmark's own).

Late acknowledgement and a prefetch of one, so that a task is acknowledged only once
it ran: the closest Celery comes to taskserver's "done means done".
"""
from __future__ import annotations

from celery import Celery

BROKER = "redis://127.0.0.1:6379/14"
app = Celery("bench", broker=BROKER)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="noop")
def noop(*args) -> None:
    """A task that does nothing: dispatch cost only."""
    return None
