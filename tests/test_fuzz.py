"""Fuzzing every route of the running coordinator from its own OpenAPI description.

Schemathesis generates requests that fit the description and requests that
break it, for every operation, with the admin token (so admin routes are
exercised too). The coordinator must answer every one with a status the
description lists, in the media type and shape it lists, and never with a 5xx.
"""
from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .harness import HEADER, T, api, start_coordinator, write_sheet

TOKEN = "fuzz-Token-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15  # per operation and mode: the whole run stays well under a minute on two shared cores


@pytest.fixture
def coordinator(procs, tmp_path, db):
    rows = [[f"10.9.0.{n}", "admin", "Fuzz-pw-1", 101, T, T.replace(hour=1), f"task {n}"] for n in range(1, 6)]
    sheet = write_sheet(tmp_path / "tasks.xlsx", rows, HEADER)
    return start_coordinator(procs, sheet, db, "--token", TOKEN)


def test_every_route_answers_generated_requests_within_its_description(coordinator):
    description = api(coordinator.url, path="/api/openapi.json", token=TOKEN).json()
    schema = schemathesis.openapi.from_dict(description)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in description["paths"].values())
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz(operation, mode, coordinator.url, session)
    assert not failures, "\n\n".join(failures[:20])
    assert "Traceback" not in coordinator.output()


def fuzz(operation, mode: GenerationMode, url: str, session: requests.Session) -> list[str]:
    """Send EXAMPLES generated requests to one operation; every answer that breaks a check, described."""
    failures = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case):
        if mode is GenerationMode.POSITIVE and "task_id" in (case.path_parameters or {}):
            case.path_parameters["task_id"] %= 8  # mostly the tasks there are, so their views are checked
        if operation.path == "/api/events":
            case.query = {**(case.query or {}), "follow": "false"}  # a following stream never ends
        # Sent with requests itself: schemathesis reads event streams with urllib3 2 calls, and hikload
        # pins urllib3 1.26.
        response = session.request(**case.as_transport_kwargs(base_url=url), timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # every failure is collected, then reported together
            failures.append(f"{case.method} {case.formatted_path} ({mode.value}): {str(exc)[:600]}")

    try:
        run()
    except Unsatisfiable:  # nothing of this operation can be made invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, f"no valid request for {operation.label}"
    return failures
