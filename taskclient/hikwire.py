"""hikload speaks ISAPI; our `NVR` carries it. The one place where the two are joined.

Why: hikload 1.1.4 builds every URL as `http://user:password@host/ISAPI/...` (a
password with `#`, `/`, `?` or `@` then sends the request elsewhere) and calls the
`requests` module directly, with no timeout, no TLS settings, redirects followed and
answers parsed by lxml with entities resolved. Its vocabulary (the XML documents,
the dict form of answers, its search description) is worth keeping; its wire is not.

So `install()` replaces the `requests` name inside `hikload.hikvisionapi.utils` by
`_Transport`, whose get/post/put/delete send each call through the `NVR` bound to
the current task with `bound(nvr)`: digest header, pinned host and port, timeouts,
TLS choice, bounded body, DOCTYPE refused, errors classified before hikload parses
anything. Outside `bound()` the transport refuses every call, so hikload can never
reach a device on its own. `Server` is a HikvisionServer whose address never holds
credentials (it is given none: the password lives only in the NVR's digest auth).
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager

from hikload.hikvisionapi import HikvisionServer
from hikload.hikvisionapi import utils as _hikload_utils

from .errors import SetupError
from .isapi import NVR

_current: contextvars.ContextVar[NVR | None] = contextvars.ContextVar("taskclient_nvr", default=None)


class _Answer:
    """The part of a requests.Response that hikload reads: `.text` (and the status)."""

    def __init__(self, data: bytes):
        self.content = data
        self.status_code = 200
        self.text = data.decode("utf-8", errors="replace")


class _Transport:
    """Stands in for the `requests` module inside hikload: every call goes through the bound NVR."""

    def get(self, url: str, data=None, **_ignored) -> _Answer:
        return self._call("GET", url, data)

    def post(self, url: str, data=None, **_ignored) -> _Answer:
        return self._call("POST", url, data)

    def put(self, url: str, data=None, **_ignored) -> _Answer:
        return self._call("PUT", url, data)

    def delete(self, url: str, data=None, **_ignored) -> _Answer:
        return self._call("DELETE", url, data)

    @staticmethod
    def _call(method: str, url: str, data) -> _Answer:
        nvr = _current.get()
        if nvr is None:
            raise SetupError("hikload made a request outside a task's NVR binding; refused")
        prefix = nvr.base + "/ISAPI/"
        if not url.startswith(prefix):
            raise SetupError(f"hikload asked for a URL outside {nvr.label}; refused")
        path = "/ISAPI/" + url[len(prefix):]
        what = path.removeprefix("/ISAPI/").split("?", 1)[0]
        return _Answer(nvr.xml(method, path, data, what=nvr.what or what))


class Server(HikvisionServer):
    """hikload's device object for one task: same vocabulary, no credentials anywhere in it."""

    def __init__(self, nvr: NVR):
        super().__init__(nvr.netloc, nvr.username, "", protocol=nvr.scheme)

    def address(self, protocol: bool = True, credentials: bool = True) -> str:
        """`scheme://host:port/ISAPI`, never with `user:password@`."""
        return f"{self.protocol}://{self.host}/ISAPI" if protocol else f"{self.host}/ISAPI"


def install() -> None:
    """Route hikload's HTTP calls through `_Transport` (idempotent; done once per process)."""
    if not isinstance(_hikload_utils.requests, _Transport):
        _hikload_utils.requests = _Transport()


@contextmanager
def bound(nvr: NVR):
    """hikload calls made inside this block go to `nvr`, and only there."""
    install()
    token = _current.set(nvr)
    try:
        yield Server(nvr)
    finally:
        _current.reset(token)
