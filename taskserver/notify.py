"""Notices: webhooks when a run drains, a task fails for good, an NVR refuses a password, a host is full or stops.

Each coordinator with `--notify` follows the change feed; every change is taken
by one coordinator only (`Store.take_events`), and a drained run is announced by
the coordinator that wins the switch of the run's state, so a notice is sent
once however many coordinators share the database. A notice is sent at most
once: a coordinator killed between taking a change and posting it loses that
notice (the dashboard and the report still have it).

Targets, comma-separated: a plain URL gets the JSON below; `slack:URL` gets
`{"text": ...}` (Slack incoming webhooks); `teams:URL` an Adaptive Card message
(Teams Workflows webhooks, which take nothing else, and the older connectors);
`ntfy:URL` posts the text to an ntfy topic URL with a title.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests

from .errors import ConfigError
from .loops import repeat
from .store import Store

log = logging.getLogger("taskserver")
NOTICES = {  # change feed kinds worth a notice, and what the notice says
    "failed": "task failed for good", "gave up": "task failed for good", "expired, failed": "task failed for good",
    "refused": "NVR refused a password", "worker full": "worker host full", "worker stopped": "worker host stopped",
    "worker fault": "worker host stopped on a fault",
}
RUN = "notify:run"  # the run's state: {"state": "running"|"drained", "since": t}
LAST_DRAIN = "notify:last_drain"  # the summary of the latest drain, for `taskserver status`


@dataclass(frozen=True)
class Target:
    """Where notices go, and in which shape."""

    kind: str  # "json", "slack", "teams", "ntfy"
    url: str

    @property
    def label(self) -> str:
        """The target without the secret a webhook URL carries in its path."""
        return f"{self.kind} {urlsplit(self.url).netloc}"


def parse_targets(text: str | None) -> list[Target]:
    """`https://...,slack:https://...`: each URL with the shape its prefix names."""
    targets = []
    for item in (text or "").replace(" ", ",").split(","):
        if not item:
            continue
        kind, _, url = item.partition(":") if item.split(":", 1)[0] in ("slack", "teams", "ntfy") else ("json", "",
                                                                                                       item)
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(f"notify target {kind} {urlsplit(url).netloc or url[:40]!r} is not an http(s) URL")
        targets.append(Target(kind, url))
    return targets


class Notifier:
    """Follows the change feed and the run's state; posts notices to the targets."""

    def __init__(self, store: Store, targets: list[Target], every: float = 2.0):
        self.store, self.targets, self.every = store, targets, every
        self.session = requests.Session()
        self.coordinator = socket.gethostname()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Take up the feed where it is now (changes from before this start are history), then follow it."""
        self.tick()
        self.store.release_connection()
        return repeat(self.store, self.every, self.tick, stop, "notices", "notices: checking for changes",
                      wait_first=True)

    def tick(self) -> None:
        """Send notices for new changes; after changes, see whether the run has drained."""
        taken = self.store.take_events("notify")
        hosts: dict[tuple, list[dict]] = {}  # a host's processes say the same thing at once: one notice per host
        for event in taken:
            if event["kind"] == "worker stopped" and event["detail"] == "queue drained":
                continue  # the normal end of a run: the drain's summary says it
            if event["kind"].startswith("worker ") and event["worker"] and not event["task_id"]:
                hosts.setdefault((event["kind"], event["worker"].split("/")[0], event["detail"]), []).append(event)
            elif event["kind"] in NOTICES:
                self.send(self.change_notice(event))
        for (kind, host, _), events in hosts.items():
            if kind in NOTICES:
                self.send(self.host_notice(host, events))
        if taken or self.store.setting(RUN) is None:
            summary = self.drained()
            if summary is not None:
                log.info("%s", summary["text"])
                self.send(summary)

    def change_notice(self, event: dict) -> dict:
        what = NOTICES[event["kind"]]
        subject = f"task {event['task_id']}" if event["task_id"] else (event["worker"] or "")
        text = f"{what}: {subject}" + (f": {event['detail']}" if event["detail"] else "")
        notice = {"event": event["kind"], "text": text[:2000], "at": _iso(event["at"])}
        if event["task_id"]:
            task = self.store.task(event["task_id"])
            notice["task"] = {k: task[k] for k in ("id", "name", "server", "username", "cameras", "start", "end",
                                                   "state", "attempts", "last_error", "source")}
        if event["worker"]:
            notice["worker"] = event["worker"]
        return notice

    def host_notice(self, host: str, events: list[dict]) -> dict:
        """One notice for what a worker host's processes reported together (full, stopped, a fault)."""
        first = events[0]
        processes = sorted({e["worker"].split("/", 1)[1] for e in events if "/" in e["worker"]})
        text = (f"{NOTICES[first['kind']]}: {host}" + (f" ({', '.join(processes)})" if processes else "")
                + (f": {first['detail']}" if first["detail"] else ""))
        return {"event": first["kind"], "text": text[:2000], "at": _iso(first["at"]), "host": host,
                "workers": sorted(e["worker"] for e in events)}

    def drained(self) -> dict | None:
        """The summary of a run that has just drained (sent by one coordinator), else None."""
        raw = self.store.setting(RUN)
        run = json.loads(raw) if raw else {"state": "drained", "since": None}
        status = self.store.status()
        now = self.store.clock()
        if not status["drained"]:
            if run["state"] != "running":
                self.store.swap_setting(RUN, raw, json.dumps({"state": "running", "since": now}))
            return None
        if run["state"] != "running" or not self.store.swap_setting(RUN, raw, json.dumps({"state": "drained",
                                                                                           "since": now})):
            return None
        failed, _ = self.store.tasks(state="failed", limit=20)
        counts = status["counts"]
        duration = now - run["since"] if run.get("since") else None
        text = (f"queue drained: {counts['done']} done, {counts['failed']} failed, {counts['cancelled']} cancelled;"
                f" {status['files']} files, {status['bytes'] / 1e9:.2f} GB"
                + (f" in {duration / 60:.0f} min" if duration is not None else ""))
        summary = {"event": "drained", "text": text, "at": _iso(now), "counts": counts, "files": status["files"],
                   "bytes": status["bytes"], "duration_seconds": round(duration) if duration is not None else None,
                   "failed": [{"id": t["id"], "name": t["name"], "server": t["server"], "last_error": t["last_error"]}
                              for t in failed]}
        self.store.put_setting(LAST_DRAIN, json.dumps(summary))
        return summary

    def send(self, notice: dict) -> None:
        notice = {**notice, "coordinator": self.coordinator}
        for target in self.targets:
            for attempt in range(3):
                try:
                    response = self._post(target, notice)
                    if response.status_code < 300:
                        break
                    problem = f"HTTP {response.status_code}"
                except requests.RequestException as exc:
                    problem = type(exc).__name__
                if attempt == 2:
                    log.warning("notice %r not delivered to %s: %s", notice["event"], target.label, problem)
                else:
                    time.sleep(0.5 * 2 ** attempt)

    def _post(self, target: Target, notice: dict) -> requests.Response:
        if target.kind == "slack":
            text = notice["text"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            return self.session.post(target.url, json={"text": f"taskserver: {text}"}, timeout=10)
        if target.kind == "teams":
            return self.session.post(target.url, json=teams_card(notice), timeout=10)
        if target.kind == "ntfy":
            return self.session.post(target.url, data=notice["text"].encode(), timeout=10,
                                     headers={"Title": f"taskserver: {notice['event']}".encode("ascii", "replace"),
                                              "Tags": "warning" if notice["event"] != "drained" else "white_check_mark"})
        return self.session.post(target.url, json=notice, timeout=10)


def teams_card(notice: dict) -> dict:
    """A Teams message holding an Adaptive Card: what Teams Workflows webhooks take (and the older incoming
    webhooks too). The text is one TextBlock; markdown link syntax in it is broken up, so that a device's
    error text cannot dress a link up as something else."""
    text = f"taskserver: {notice['text']}".replace("](", "] (")
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                    "version": "1.4", "body": [{"type": "TextBlock", "text": text, "wrap": True}]}}]}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
