"""The worker host's errors; the pool turns the fatal ones into named exit codes."""
from __future__ import annotations


class ClientError(Exception):
    """Base class for taskclient errors."""


class AuthError(ClientError):
    """Raised when the coordinator refuses the token (HTTP 401/403); fatal for the whole host."""


class SetupError(ClientError):
    """Raised when the worker host is misconfigured (unknown runner, bad folder, bad URL); fatal."""


class LeaseLost(ClientError):
    """Raised when the coordinator says our lease is no longer current (HTTP 409/404): stop the task."""


class Stopped(ClientError):
    """Raised when the host is shutting down while a request was still being retried."""


class TaskFailed(ClientError):
    """Raised by a runner when a task attempt failed.

    `permanent` skips the remaining attempts; `device` ("busy" or "unreachable")
    blames the NVR rather than the task, so the coordinator rests the NVR and
    charges no attempt.
    """

    def __init__(self, message: str, permanent: bool = False, device: str | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.device = device


class Cancelled(ClientError):
    """Raised by a runner that stopped because its lease was lost or the host is aborting."""
