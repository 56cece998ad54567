"""The coordinator's HTTP protocol, client side. The only module that speaks HTTP to it.

Transient trouble (connection refused or reset, timeouts, 5xx) is retried with
capped exponential back-off and jitter, rotating through every coordinator URL
given, until it succeeds or the host stops, so a coordinator restart costs a
pause, never a finished result.
"""
from __future__ import annotations

import logging
import random
import threading
from urllib.parse import urlsplit

import requests

from .errors import AuthError, LeaseLost, SetupError, Stopped

RETRY_STATUS = {500, 502, 503, 504}
log = logging.getLogger("taskclient")


class Coordinator:
    """One worker's connection to the coordinator(s)."""

    def __init__(self, urls: list[str], worker: str, token: str | None = None, ca_file: str | None = None,
                 timeout: float = 30.0, abort: threading.Event | None = None,
                 stop_claims: threading.Event | None = None):
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise SetupError(f"coordinator URL {url!r} must look like http://host:port")
        self.urls = [u.rstrip("/") for u in urls]
        self.worker = worker
        self.timeout = timeout
        self.abort = abort or threading.Event()  # ends every retry loop
        self.stop_claims = stop_claims or self.abort  # ends a claim's retry loop (graceful stop)
        self._current = 0
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "taskclient"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if ca_file:
            self.session.verify = ca_file

    def claim(self) -> dict:
        """One claim answer: {"status": "task"|"wait"|"drained", ...}."""
        return self._request("GET", "/api/claim", params={"worker": self.worker}, stop=self.stop_claims)

    def heartbeat(self, task_id: int, lease: str, progress: dict | None) -> None:
        """Extend the lease; raises LeaseLost if the task is no longer ours."""
        self._request("POST", f"/api/tasks/{task_id}/heartbeat", json={"lease": lease, "progress": progress},
                      retry=False)

    def complete(self, task_id: int, lease: str, result: dict, claim_next: bool) -> dict | None:
        """Report success; returns the next claim answer when `claim_next` (one round trip per task)."""
        body = {"lease": lease, "result": result, "next": claim_next, "worker": self.worker}
        return self._request("POST", f"/api/tasks/{task_id}/complete", json=body).get("next")

    def exchange(self, done: list[dict], claim: int) -> dict:
        """Opt-in batches for short tasks: report finished ones and lease up to `claim` more in one request.

        `done` holds {"id", "lease", "result"} objects. The answer lists each one's
        outcome ({"id", "ok", "error"}) and "status": "task" with "tasks" (each with its
        own lease), "wait" with "retry_after", or "drained".
        """
        body = {"worker": self.worker, "done": done, "claim": claim}
        return self._request("POST", "/api/batch", json=body, stop=self.stop_claims if not done else None)

    def fail(self, task_id: int, lease: str, error: str, permanent: bool = False, device: str | None = None) -> str:
        """Report a failed attempt; returns the task's new state."""
        body = {"lease": lease, "error": error, "permanent": permanent, "device": device}
        return self._request("POST", f"/api/tasks/{task_id}/fail", json=body)["state"]

    def release(self, task_id: int, lease: str) -> None:
        """Hand a task back unrun; a lease that is already gone is fine."""
        try:
            self._request("POST", f"/api/tasks/{task_id}/release", json={"lease": lease}, retry=False)
        except (LeaseLost, requests.RequestException):
            pass

    def _request(self, method: str, path: str, retry: bool = True, stop: threading.Event | None = None,
                 **kwargs) -> dict:
        stop = stop or self.abort
        delay = 0.2
        trouble = None
        while True:
            url = self.urls[self._current] + path
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                # The next request, retried or not, goes to the next coordinator.
                self._current = (self._current + 1) % len(self.urls)
                if not retry:
                    raise
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code in (401, 403):
                    raise AuthError(f"{url}: the coordinator refused our token (HTTP {response.status_code});"
                                    " check --token / TASKSERVER_TOKEN")
                if response.status_code in (404, 409) and path.startswith("/api/tasks/"):
                    raise LeaseLost(_message(response))
                if response.status_code not in RETRY_STATUS:
                    if trouble:
                        log.info("coordinator %s answers again", self.urls[self._current])
                    if response.status_code >= 400:
                        raise SetupError(f"{url}: HTTP {response.status_code}: {_message(response)}")
                    return response.json()
                if not retry:
                    raise requests.HTTPError(f"HTTP {response.status_code}")
                problem = f"HTTP {response.status_code}"
            if trouble is None:
                trouble = problem
                log.warning("coordinator %s unreachable (%s); retrying", url.split("/api/")[0], problem)
            if stop.wait(delay * random.uniform(0.8, 1.2)) or self.abort.is_set():
                raise Stopped(f"stopped while retrying {method} {path} ({problem})")
            delay = min(delay * 2, 10.0)


def _message(response: requests.Response) -> str:
    try:
        return response.json().get("message") or response.text[:300]
    except ValueError:
        return response.text[:300]
