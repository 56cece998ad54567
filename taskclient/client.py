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

from .errors import AuthError, LeaseLost, SetupError, Stopped, TLSRefused
from .tls import describe_tls_error

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
            if not (token.isascii() and token.isprintable() and " " not in token):
                # Coordinators take printable ASCII tokens only, so this one can never be accepted.
                raise AuthError("--token / TASKSERVER_TOKEN must be printable ASCII without spaces;"
                                " the coordinator would refuse this one")
            self.session.headers["Authorization"] = f"Bearer {token}"
        # Given with each request: a session's own `verify` loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.
        self.verify = ca_file or True

    def claim(self, hold: float = 0) -> dict:
        """One claim answer: {"status": "task"|"wait"|"drained", ...}.

        With `hold` (seconds), a coordinator that has nothing to hand out may keep the
        request open until a task is freed, for up to that long; its "wait" answer then
        says "held". One that does not hold claims answers at once, as before.
        """
        params = {"worker": self.worker}
        if hold > 0:
            params["wait"] = f"{min(hold, self.timeout / 2):.2f}"
        return self._request("GET", "/api/claim", params=params, stop=self.stop_claims)

    def heartbeat(self, task_id: int, lease: str, progress: dict | None) -> None:
        """Extend the lease; raises LeaseLost if the task is no longer ours."""
        self._request("POST", f"/api/tasks/{task_id}/heartbeat", json={"lease": lease, "progress": progress},
                      retry=False)

    def lease_state(self, task_id: int, lease: str) -> dict:
        """Is our lease still current, and if not, why ({"current", "state", "reason", "detail"})?

        A read, not retried, asked every few seconds while a task runs: a cancel reaches
        the task within seconds, at no more writes than the heartbeat's.
        """
        return self._request("GET", f"/api/tasks/{task_id}/lease", params={"lease": lease}, retry=False)

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

    def fail(self, task_id: int, lease: str, error: str, permanent: bool = False, device: str | None = None,
             locked_for: int | None = None) -> str:
        """Report a failed attempt; returns the task's new state.

        `device` "auth" (the NVR refused the login) is new in the protocol: a
        coordinator that does not know it yet answers 400, and then the failure is
        sent as a permanent one, so a wrong password still costs one login per task.
        """
        body = {"lease": lease, "error": error, "permanent": permanent, "device": device}
        if device == "auth":
            body["locked_for"] = locked_for
        try:
            return self._request("POST", f"/api/tasks/{task_id}/fail", json=body)["state"]
        except SetupError:
            if device != "auth":
                raise
            log.warning("the coordinator does not know device 'auth'; task %s fails for good instead", task_id)
            body = {"lease": lease, "error": error, "permanent": True, "device": None}
            return self._request("POST", f"/api/tasks/{task_id}/fail", json=body)["state"]

    def release(self, task_id: int, lease: str, reason: str | None = None) -> None:
        """Hand a task back unrun (no attempt charged); a lease that is already gone is fine."""
        body = {"lease": lease, **({"reason": reason} if reason else {})}
        try:
            self._request("POST", f"/api/tasks/{task_id}/release", json=body, retry=False)
        except (LeaseLost, requests.RequestException, SetupError):
            pass

    def worker_state(self, state: str, detail: str = "") -> None:
        """Tell the coordinator this worker's state: "ok", "full", "fault" or "stopped".

        Best effort, never retried: a coordinator without the call (404) or away is fine.
        """
        body = {"worker": self.worker, "state": state, "detail": detail[:500]}
        try:
            self._request("POST", "/api/workers/state", json=body, retry=False)
        except (SetupError, LeaseLost, requests.RequestException) as exc:
            log.debug("worker state %s not delivered: %s", state, exc)

    def drained(self) -> bool:
        """Whether the queue is drained, without claiming anything (a full host asks this while it waits)."""
        try:
            return bool(self._request("GET", "/api/status", retry=False).get("drained"))
        except (SetupError, requests.RequestException):
            return False

    def _request(self, method: str, path: str, retry: bool = True, stop: threading.Event | None = None,
                 **kwargs) -> dict:
        stop = stop or self.abort
        delay = 0.2
        trouble = None
        while True:
            url = self.urls[self._current] + path
            try:
                response = self.session.request(method, url, timeout=self.timeout, verify=self.verify, **kwargs)
            except requests.RequestException as exc:
                if isinstance(exc, requests.exceptions.SSLError) and "certificate verify failed" in str(exc).lower():
                    # A certificate this host does not trust stays untrusted: say so once, do not retry.
                    raise TLSRefused(f"{url.split('/api/')[0]}: TLS refused: {describe_tls_error(str(exc))};"
                                     " give the CA that signed it with --ca-file (TASKCLIENT_CA_FILE)") from None
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
