"""`/metrics` in Prometheus text format.

Every figure is read from the store at scrape time, so counters survive
coordinator restarts and agree between several coordinators on one database:
claims are attempts started, completions and failures are attempts by outcome.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from . import api
from .store import State

bp = Blueprint("metrics", __name__)
bp.before_request(api.check_token)


class StoreCollector:
    """Turns the store's figures (and the held claims) into metric families."""

    def __init__(self, store, holds=None):
        self.store = store
        self.holds = holds

    def collect(self):
        figures = self.store.metrics()
        tasks = GaugeMetricFamily("taskserver_tasks", "Tasks by state", labels=["state"])
        for state in State:
            tasks.add_metric([state.value], figures["states"].get(state.value, 0))
        yield tasks
        outcomes = figures["attempts"]
        yield CounterMetricFamily("taskserver_claims", "Tasks handed out (attempts started)",
                                  value=sum(outcomes.values()))
        yield CounterMetricFamily("taskserver_completions", "Attempts that completed", value=outcomes.get("done", 0))
        yield CounterMetricFamily("taskserver_failures", "Attempts that failed", value=outcomes.get("failed", 0))
        yield CounterMetricFamily("taskserver_lease_expiries", "Leases that ran out",
                                  value=outcomes.get("expired", 0))
        yield CounterMetricFamily("taskserver_nvr_rests", "Attempts that found their NVR busy or unreachable",
                                  value=outcomes.get("nvr busy", 0) + outcomes.get("nvr unreachable", 0))
        yield CounterMetricFamily("taskserver_bytes_downloaded", "Bytes in the results of done tasks",
                                  value=figures["bytes"])
        running = GaugeMetricFamily("taskserver_nvr_in_flight", "Tasks running per NVR", labels=["nvr"])
        for server, count in sorted(figures["nvr_running"].items()):
            running.add_metric([server], count)
        yield running
        if self.holds is not None:
            yield GaugeMetricFamily("taskserver_claims_held", "Claims held open until a task is freed (?wait=)",
                                    value=self.holds.holding)


@bp.get("/metrics")
def metrics():
    """The current figures, for a Prometheus scrape."""
    registry = current_app.extensions.get("taskserver.metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(api.store(), current_app.extensions.get("taskserver.holds")))
        current_app.extensions["taskserver.metrics"] = registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
