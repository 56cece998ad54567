"""The coordinator's errors: one base class, each subclass with its HTTP status.

Views raise these; one handler in `app.py` renders them as JSON. The CLI prints
their message and exits non-zero.
"""
from __future__ import annotations


class TaskServerError(Exception):
    """Base class: a failure the user can act on, with a clear message."""

    status = 500

    def to_dict(self) -> dict:
        """JSON body of the error answer."""
        return {"error": type(self).__name__, "message": str(self)}


class Unavailable(TaskServerError):
    """Raised when the database cannot serve a request in time; workers retry a 503."""

    status = 503


class ConfigError(TaskServerError):
    """Raised when settings are missing or contradictory; the coordinator refuses to start."""

    status = 500


class BadRequest(TaskServerError):
    """Raised when a request body or parameter is malformed."""

    status = 400


class Unauthorized(TaskServerError):
    """Raised when a request lacks the bearer token or carries a wrong one."""

    status = 401


class Forbidden(TaskServerError):
    """Raised when a browser page of another origin tries to change state or claim a task."""

    status = 403


class MisdirectedRequest(TaskServerError):
    """Raised when a request names a Host this coordinator does not serve (e.g. a DNS-rebinding page)."""

    status = 421


class UnsupportedMediaType(TaskServerError):
    """Raised when a request body is not JSON (an HTML form cannot post to the API)."""

    status = 415


class TaskNotFound(TaskServerError):
    """Raised when a task id names no task."""

    status = 404

    def __init__(self, task_id: int):
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


class Conflict(TaskServerError):
    """Raised when an admin action does not fit the task's state (e.g. cancelling a done task)."""

    status = 409


class LeaseLost(TaskServerError):
    """Raised when a worker reports on a lease that is no longer the task's current lease.

    The task expired and was handed to another worker, was cancelled, or the
    lease id is wrong. Nothing was changed.
    """

    status = 409

    def __init__(self, task_id: int, state: str):
        super().__init__(f"task {task_id}: lease is not current (task is {state}); nothing changed")
        self.task_id = task_id
        self.state = state

    def to_dict(self) -> dict:
        return {**super().to_dict(), "task": self.task_id, "state": self.state}


class SheetError(TaskServerError):
    """Raised when a task sheet cannot be imported; nothing of it was queued.

    Carries every problem found, each with file, sheet, row and column.
    """

    status = 400

    def __init__(self, problems: list[SheetProblem], what: str = "the task sheet"):
        self.problems = problems
        head = f"{len(problems)} problem(s) in {what}; nothing was imported:" if len(problems) > 1 else ""
        lines = [str(p) for p in problems[:50]]
        if len(problems) > 50:
            lines.append(f"... and {len(problems) - 50} more")
        super().__init__("\n".join(([head] if head else []) + lines))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": [p.__dict__ for p in self.problems]}


class SheetProblem:
    """One problem in a sheet: where it is and what is wrong."""

    def __init__(self, file: str, message: str, sheet: str | None = None, row: int | None = None,
                 column: str | None = None):
        self.file, self.sheet, self.row, self.column, self.message = file, sheet, row, column, message

    def __str__(self) -> str:
        where = [self.file]
        if self.sheet is not None:
            where.append(f"sheet {self.sheet!r}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}"
