"""The Flask application factory."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from . import holds, logs, security
from .config import Config
from .errors import ConfigError, TaskServerError
from .sheet import spool_sheet
from .store import Clock, Store
from .validate import TaskId

log = logging.getLogger("taskserver")


def create_app(config: Config | None = None, clock: Clock | None = None) -> Flask:
    """Build the coordinator: open the store, load the configured sheet, register the views.

    Settings come from `TASKSERVER_*` environment variables when no config is
    given, which is how `flask --app taskserver run` configures it. `clock` (time.time
    by default) is the one clock of leases, backoff, rests and schedules.
    """
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config["TASKSERVER"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_body
    app.json.sort_keys = False
    app.url_map.converters["id"] = TaskId
    logs.install()
    security.install(app, config)
    store = config.open_store(clock=clock or time.time)
    app.extensions["taskserver.store"] = store
    load_tasks(store, config)
    from .notify import Notifier, parse_targets
    from .schedule import start_ticker

    holds.install(app, config.threads)
    stop = app.extensions["taskserver.stop"] = threading.Event()  # set when the coordinator stops
    start_ticker(store, config.schedule_every, stop)
    Notifier(store, parse_targets(config.notify)).start(stop)
    from .feedlog import FeedLog

    FeedLog(store).start(stop)

    from . import api, dashboard, events, files, metrics, openapi, rest

    app.register_blueprint(dashboard.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(rest.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(openapi.bp)

    @app.errorhandler(TaskServerError)
    def task_server_error(exc: TaskServerError):
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return jsonify(exc.to_dict()), exc.status

    def database_unavailable(exc: Exception):
        log.error("%s %s: database unavailable: %s", request.method, request.path, str(exc).strip())
        return jsonify({"error": "Unavailable", "message": f"{store.url} is unavailable; retry shortly"}), 503

    for error in store.UNAVAILABLE:
        app.register_error_handler(error, database_unavailable)

    @app.teardown_request
    def give_back_connection(_exc):
        store.release_connection()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not request.path.startswith("/api/"):
            return exc
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]  # e.g. Allow on a 405
        return jsonify({"error": exc.name, "message": exc.description}), exc.code, headers

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app


def load_tasks(store: Store, config: Config) -> None:
    """Import the configured sheet at start; re-importing adds nothing twice.

    A missing default `tasks.xlsx` is not an error (the database may already hold
    the queue); a missing sheet that was asked for by name is.
    """
    if not config.tasks:
        return
    path = Path(config.tasks)
    if not path.exists():
        if config.tasks == Config.tasks:
            log.warning("no %s in %s; serving the tasks already in %s", path, Path.cwd(), store.url)
            return
        raise ConfigError(f"task sheet {path} not found")
    spooled = spool_sheet(path, chunk=config.chunk, timezone=config.timezone, now=store.clock())
    try:
        result = spooled.into(store)
    finally:
        spooled.close()
    log.info("%s: %d task(s) added, %d already queued", path, result.added, result.existing)
