"""The `taskserver` command: serve, import, requeue, export, watch, status, migrate-db."""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from contextlib import contextmanager

from .config import Config
from .errors import TaskServerError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DB_HELP = ("SQLite file or sqlite:///path, or postgresql://user@host/database (default taskserver.db;"
           " keep a database password in TASKSERVER_DB, PGPASSWORD or ~/.pgpass, not on the command line)")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; errors print one clear message and exit non-zero."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except TaskServerError as exc:
        print(f"taskserver: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


def parser() -> argparse.ArgumentParser:
    """Options default to None so that TASKSERVER_* variables and Config defaults apply."""
    p = argparse.ArgumentParser(prog="taskserver", description="Pull-based task coordinator.")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the coordinator with waitress")
    serve.add_argument("--tasks", help="sheet to load at start (default tasks.xlsx; '' for none)")
    serve.add_argument("--db", help=DB_HELP)
    serve.add_argument("--db-pool", type=int, help="PostgreSQL connections per coordinator (default 10)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--token", help="bearer token for workers and admin calls")
    serve.add_argument("--read-token", help="a token that may only read: status, task lists, report, events")
    serve.add_argument("--lease-seconds", type=float, help="lease length (default 60)")
    serve.add_argument("--max-attempts", type=int, help="attempts per task (default 5)")
    serve.add_argument("--backoff-base", type=float, help="first retry delay in seconds (default 10)")
    serve.add_argument("--backoff-max", type=float, help="retry delay cap in seconds (default 600)")
    serve.add_argument("--max-wait", type=float, help="longest 'ask again after' (default 5)")
    serve.add_argument("--threads", type=int, help="waitress threads (default 8)")
    serve.add_argument("--streams", type=int,
                       help="open event streams allowed, each with a thread of its own (default 32)")
    serve.add_argument("--connections", type=int,
                       help="open connections accepted; at least the number of workers (default 1000)")
    serve.add_argument("--header-timeout", type=float,
                       help="seconds a connection may take to send a request's head (default 15)")
    serve.add_argument("--max-body", type=int, help="largest request body in bytes (default 8388608, 8 MiB)")
    serve.add_argument("--public-host",
                       help="names this coordinator is reached by besides its addresses, comma-separated"
                            " (e.g. coord.example.com behind a proxy)")
    serve.add_argument("--per-nvr", type=int, help="concurrent tasks per NVR (default 2)")
    serve.add_argument("--nvr-backoff", type=float,
                       help="first rest in seconds for a busy or unreachable NVR, doubling up to 300 (default 5)")
    serve.add_argument("--nvr-give-up", type=float,
                       help="seconds an NVR may stay busy or unreachable before its tasks fail (default 1800)")
    serve.add_argument("--events-kept", type=int,
                       help="newest task changes kept for event streams that reconnect (default 200000)")
    serve.add_argument("--schedule-every", type=float, help="seconds between two checks for due schedules (default 30)")
    serve.add_argument("--notify", help="webhook URL(s) for notices, comma-separated; prefix slack:, teams: or ntfy:"
                                        " for those services (default: none)")
    sheet_options(serve)
    serve.set_defaults(func=cmd_serve)

    imp = sub.add_parser("import", help="add a sheet's rows to the database (all or nothing)")
    imp.add_argument("sheet", help="the .xlsx or .csv file")
    imp.add_argument("--db", help=DB_HELP)
    imp.add_argument("--create", action="store_true", help="make the database if it does not exist yet")
    imp.add_argument("--dry-run", action="store_true",
                     help="add the rows as dry runs: workers list what each would export, download nothing")
    sheet_options(imp)
    imp.set_defaults(func=cmd_import)

    again = sub.add_parser("requeue", help="queue failed tasks again, with fresh attempts")
    again.add_argument("ids", nargs="*", type=int, help="task ids (default: every failed task)")
    again.add_argument("--nvr", help="only this NVR's tasks (host or host:port, as in the sheet)")
    again.add_argument("--cancelled", action="store_true", help="cancelled tasks too (they were cancelled on purpose)")
    again.add_argument("--db", help=DB_HELP)
    again.set_defaults(func=cmd_requeue)

    key = sub.add_parser("new-key", help="print a new key for sealing NVR passwords (TASKSERVER_SECRET_KEY)")
    key.set_defaults(func=cmd_new_key)

    rotate = sub.add_parser("rotate-key", help="seal every stored NVR password with the newest key")
    rotate.add_argument("--db", help=DB_HELP)
    rotate.set_defaults(func=cmd_rotate_key)

    report = sub.add_parser("export", help="write the Excel report (per sheet row, per NVR, per task)")
    report.add_argument("report", help="the .xlsx file to write, e.g. report.xlsx")
    report.add_argument("--db", help=DB_HELP)
    report.set_defaults(func=cmd_export)

    watch = sub.add_parser("watch", help="follow a running coordinator's task changes as they happen")
    watch.add_argument("--url", default="http://127.0.0.1:8080", help="coordinator URL")
    watch.add_argument("--token", help="bearer token (default $TASKSERVER_TOKEN)")
    watch.set_defaults(func=cmd_watch)

    move = sub.add_parser("migrate-db", help="copy a deployment's whole state into another, empty database")
    move.add_argument("--from", dest="source", required=True, metavar="URL",
                      help="the database now in use, e.g. sqlite:///taskserver.db")
    move.add_argument("--to", dest="target", required=True, metavar="URL",
                      help="the new database, e.g. postgresql://taskserver@dbhost/taskserver")
    move.set_defaults(func=cmd_migrate_db)

    status = sub.add_parser("status", help="show a running coordinator's progress")
    status.add_argument("--url", default="http://127.0.0.1:8080", help="coordinator URL")
    status.add_argument("--token", help="bearer token (default $TASKSERVER_TOKEN)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=cmd_status)
    return p


def sheet_options(p: argparse.ArgumentParser) -> None:
    """Options that shape how sheet rows become tasks."""
    p.add_argument("--chunk", help="split rows per camera and per this much time: 30m, 1h, 1d (default: no split)")
    p.add_argument("--timezone", help="the NVRs' IANA time zone, e.g. Europe/Bucharest, or auto (each NVR's own),"
                                      " for sheet times with an offset (default: refuse such times)")


@contextmanager
def _store(config: Config, create: bool = False):
    """The existing database a command works on, directly (safe while a coordinator serves it)."""
    store = config.open_store(create=create)
    try:
        yield store
    finally:
        store.close()


def _config(args: argparse.Namespace, *names: str) -> Config:
    return Config.from_env(**{n: getattr(args, n, None) for n in (*names, "key_file")})


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve with waitress; print the address (and a generated token) once."""
    from .app import create_app
    from .server import make_server

    config = _config(args, "tasks", "db", "host", "port", "token", "read_token", "lease_seconds", "max_attempts",
                     "backoff_base", "backoff_max", "max_wait", "threads", "streams", "connections", "per_nvr",
                     "nvr_backoff", "nvr_give_up", "chunk", "timezone", "db_pool", "events_kept", "header_timeout",
                     "max_body", "public_host", "schedule_every", "notify")
    if not config.loopback and not config.token:
        token = secrets.token_urlsafe(24)
        config = Config.from_env(**{**config.__dict__, "token": token})
        print(f"taskserver: listening beyond loopback without a token; generated one (shown once):\n"
              f"  {token}\npass it to workers with --token or TASKSERVER_TOKEN", file=sys.stderr, flush=True)
    app = create_app(config)
    server = make_server(app, config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"taskserver listening on http://{host}:{server.effective_port}", flush=True)
    try:
        server.run()
    finally:
        app.extensions["taskserver.stop"].set()
        server.close()
        app.extensions["taskserver.store"].close()
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """Validate the whole sheet, then queue its rows in one transaction."""
    from .sheet import Imported, load_sheet

    config = _config(args, "db", "chunk", "timezone")
    imported = load_sheet(args.sheet, chunk=config.chunk, timezone=config.timezone)
    if args.dry_run:
        if imported.schedules:
            print(f"{args.sheet}: {len(imported.schedules)} row(s) on a schedule are left out of the dry run")
        imported = Imported(dry_runs(imported))
    with _store(config, create=args.create) as store:
        result = imported.into(store)
        updated = f" ({result.updated} with a corrected password)" if result.updated else ""
        what = "dry run(s)" if args.dry_run else "task(s)"
        print(f"{args.sheet}: {result.added} {what} added, {result.existing} already in {store.url}{updated}")
    return EXIT_OK


def dry_runs(specs: list) -> list:
    """The same rows as dry runs: their own keys, so that the real export can be imported afterwards."""
    from dataclasses import replace

    return [replace(s, key=f"list:{s.key}", group=f"list:{s.group or s.key}", mode="list",
                    name=f"dry run: {s.name}" if s.name else "dry run") for s in specs]


def cmd_requeue(args: argparse.Namespace) -> int:
    """Give failed tasks (cancelled ones too, with --cancelled) another round of attempts; list them."""
    config = _config(args, "db")
    with _store(config) as store:
        ids = store.requeue(args.ids or None, args.nvr.lower() if args.nvr else None, cancelled=args.cancelled)
    shown = ", ".join(map(str, ids[:50])) + (f" and {len(ids) - 50} more" if len(ids) > 50 else "")
    print(f"{len(ids)} task(s) queued again{': ' + shown if ids else ''}")
    return EXIT_OK


def cmd_new_key(args: argparse.Namespace) -> int:
    """Print a new random key."""
    from .vault import new_key

    print(new_key())
    return EXIT_OK


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Re-seal with the newest key: give TASKSERVER_SECRET_KEY="new,old" (or a key file, newest first)."""
    with _store(_config(args, "db")) as store:
        count = store.rotate_key()
    print(f"{count} password(s) sealed with the newest key; the old key is no longer needed")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write the report from the database (safe while the coordinator runs)."""
    from .report import export

    with _store(_config(args, "db")) as store:
        path = export(store, args.report)
    print(f"report written to {path}")
    return EXIT_OK


def cmd_migrate_db(args: argparse.Namespace) -> int:
    """Copy tasks, attempts, NVR state, events and settings, ids and leases included, in one transaction.

    Stop the coordinators first, migrate, then start them on the new database:
    workers keep their leases and simply report to the new coordinators.
    """
    from pathlib import Path

    from .errors import ConfigError
    from .store import Policy, open_store, sqlite_path

    path = sqlite_path(args.source)
    if path is not None and not Path(path).is_file():  # opening it would make an empty one
        raise ConfigError(f"{path} not found: --from names the database now in use")
    vault = Config.from_env(db=args.source).vault()  # the new database needs the same key
    source = open_store(args.source, Policy(), vault, create=False)
    try:
        target = open_store(args.target, Policy(), vault)
        try:
            counts = target.copy_from(source)
        finally:
            target.close()
    finally:
        source.close()
    print(f"copied {source.url} to {target.url}: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Print each task change from /api/events, reconnecting where it left off, until Ctrl-C."""
    import os
    import time
    from datetime import datetime

    import requests

    from .logs import escape

    token = args.token or os.environ.get("TASKSERVER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = None
    while True:
        if last:
            headers["Last-Event-ID"] = last
        try:
            with requests.get(args.url.rstrip("/") + "/api/events", headers=headers, stream=True,
                              timeout=(10, 60)) as response:
                if response.status_code in (401, 403):
                    print(f"taskserver: {args.url} refused the token (HTTP {response.status_code})", file=sys.stderr)
                    return EXIT_ERROR
                kind = None
                for line in response.iter_lines(decode_unicode=True):
                    if line.startswith("id: "):
                        last = line[4:]
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "task":
                        e = json.loads(line[6:])
                        who = f" by {escape(str(e['worker']))}" if e["worker"] else ""
                        task = f"task {e['task_id']} " if e["task_id"] else ""
                        detail = f": {escape(str(e['detail']))}" if e["detail"] else ""
                        print(f"{datetime.fromtimestamp(e['at']):%H:%M:%S} {task}{e['kind']}"
                              f"{' -> ' + e['state'] if e['state'] and e['state'] != e['kind'] else ''}{who}{detail}",
                              flush=True)
                    elif line.startswith("data: ") and kind == "summary":
                        s = json.loads(line[6:])
                        counts = " ".join(f"{k} {v}" for k, v in s["counts"].items() if v)
                        print(f"-- {counts}; {s['workers']} worker(s){' DRAINED' if s['drained'] else ''}", flush=True)
        except requests.RequestException as exc:
            print(f"taskserver: {args.url}: {exc}; reconnecting", file=sys.stderr)
            time.sleep(2)


def cmd_status(args: argparse.Namespace) -> int:
    """Fetch /api/status and print it as a short table."""
    import os

    import requests

    from .logs import escape

    token = args.token or os.environ.get("TASKSERVER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(args.url.rstrip("/") + "/api/status", headers=headers, timeout=10)
    except requests.RequestException as exc:
        print(f"taskserver: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if response.status_code != 200:
        print(f"taskserver: {args.url} answered {response.status_code}: {escape(response.text[:300])}",
              file=sys.stderr)
        return EXIT_ERROR
    status = response.json()
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    counts = status["counts"]
    print("  ".join(f"{state} {n}" for state, n in counts.items()))
    print(f"tasks {status['tasks']}  files {status['files']}  bytes {status['bytes']}"
          f"  {'DRAINED' if status['drained'] else 'running'}")
    for w in status["workers"]:
        where = f"task {w['task']}" if w["task"] else "idle"
        lost = "  LOST" if w["lost"] else ""
        print(f"  {escape(str(w['name'])):<40} {where:<12} done {w['done']:<6} seen {w['last_seen_ago']}s ago{lost}")
    return EXIT_OK
