"""The worker host's errors; the pool turns the fatal ones into named exit codes."""
from __future__ import annotations


class ClientError(Exception):
    """Base class for taskclient errors."""


class AuthError(ClientError):
    """Raised when the coordinator refuses the token (HTTP 401/403); fatal for the whole host."""


class TLSRefused(ClientError):
    """Raised when the coordinator's certificate (or its proxy's) is not trusted: fatal, never retried."""


class SetupError(ClientError):
    """Raised when the worker host is misconfigured (unknown runner, bad folder, bad URL); fatal."""


class LeaseLost(ClientError):
    """Raised when the coordinator says our lease is no longer current (HTTP 409/404): stop the task."""


class Stopped(ClientError):
    """Raised when the host is shutting down while a request was still being retried."""


class TaskFailed(ClientError):
    """Raised by a runner when a task attempt failed.

    `permanent` skips the remaining attempts; `device` blames the NVR rather than
    the task: "busy" or "unreachable" make the coordinator rest the NVR, "auth" means
    the NVR refused this task's username/password (or has locked it out), and
    `locked_for` is how long the device said it stays locked. None of these charge
    an attempt.
    """

    def __init__(self, message: str, permanent: bool = False, device: str | None = None,
                 locked_for: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.device = device
        self.locked_for = locked_for


class NotSupported(TaskFailed):
    """Raised when the NVR refuses a request as an invalid operation (a method or resource its firmware lacks).

    `sub` is the device's subStatusCode (e.g. "methodNotAllowed", "badXmlContent"),
    so a caller can try the other method, spelling or list.
    """

    def __init__(self, message: str, sub: str = ""):
        super().__init__(message)
        self.sub = sub


class HostFault(ClientError):
    """Raised when the worker host itself fails a task (no space, no permission, a missing tool).

    The task is released without charging an attempt: another host may run it.
    `full` says the host is short of disk space, `needed` how many bytes the task wanted.
    """

    def __init__(self, message: str, full: bool = False, needed: int | None = None):
        super().__init__(message)
        self.full = full
        self.needed = needed


class Cancelled(ClientError):
    """Raised by a runner that stopped because its lease was lost or the host is aborting."""
