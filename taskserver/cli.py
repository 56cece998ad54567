"""The `taskserver` command: serve, import, requeue, export, watch, status, migrate-db."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import signal
import sys
from contextlib import contextmanager

from .config import Config
from .errors import TaskServerError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("taskserver")


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
    Config.add_options(serve, "serve")
    serve.set_defaults(func=cmd_serve)

    imp = sub.add_parser("import", help="add a sheet's rows to the database (all or nothing)")
    imp.add_argument("sheet", help="the .xlsx or .csv file")
    Config.add_options(imp, "import")
    imp.add_argument("--create", action="store_true", help="make the database if it does not exist yet")
    imp.add_argument("--dry-run", action="store_true",
                     help="add the rows as dry runs: workers list what each would export, download nothing")
    imp.set_defaults(func=cmd_import)

    again = sub.add_parser("requeue", help="queue failed tasks again, with fresh attempts")
    again.add_argument("ids", nargs="*", type=int, help="task ids (default: every failed task)")
    again.add_argument("--nvr", help="only this NVR's tasks (host or host:port, as in the sheet)")
    again.add_argument("--cancelled", action="store_true", help="cancelled tasks too (they were cancelled on purpose)")
    Config.add_options(again, "requeue")
    again.set_defaults(func=cmd_requeue)

    key = sub.add_parser("new-key", help="print a new key for sealing NVR passwords (TASKSERVER_SECRET_KEY)")
    key.set_defaults(func=cmd_new_key)

    rotate = sub.add_parser("rotate-key", help="seal every stored NVR password with the newest key")
    Config.add_options(rotate, "rotate-key")
    rotate.set_defaults(func=cmd_rotate_key)

    report = sub.add_parser("export", help="write the Excel report (per sheet row, per NVR, per task)")
    report.add_argument("report", help="the .xlsx file to write, e.g. report.xlsx")
    Config.add_options(report, "export")
    report.set_defaults(func=cmd_export)

    watch = sub.add_parser("watch", help="follow a running coordinator's task changes as they happen")
    watch.add_argument("--url", help="coordinator URL (default $TASKSERVER_URL, else http://127.0.0.1:8080)")
    watch.add_argument("--token", help="bearer token (default $TASKSERVER_TOKEN)")
    watch.set_defaults(func=cmd_watch)

    move = sub.add_parser("migrate-db", help="copy a deployment's whole state into another, empty database")
    move.add_argument("--from", dest="source", required=True, metavar="URL",
                      help="the database now in use, e.g. sqlite:///taskserver.db")
    move.add_argument("--to", dest="target", required=True, metavar="URL",
                      help="the new database, e.g. postgresql://taskserver@dbhost/taskserver")
    move.set_defaults(func=cmd_migrate_db)

    status = sub.add_parser("status", help="show a running coordinator's progress")
    status.add_argument("--url", help="coordinator URL (default $TASKSERVER_URL, else http://127.0.0.1:8080)")
    status.add_argument("--token", help="bearer token (default $TASKSERVER_TOKEN)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=cmd_status)
    return p


@contextmanager
def _store(config: Config, create: bool = False):
    """The existing database a command works on, directly (safe while a coordinator serves it)."""
    store = config.open_store(create=create)
    try:
        yield store
    finally:
        store.close()


def _config(args: argparse.Namespace) -> Config:
    """The settings: the command's options, over TASKSERVER_* variables, over the defaults."""
    return Config.from_env(**{f.name: getattr(args, f.name, None) for f in Config.settings()})


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve with waitress; print the address (and a generated token) once."""
    from .app import create_app
    from .server import make_server

    config = _config(args)
    if not config.loopback and not config.token:
        token = secrets.token_urlsafe(24)
        config = Config.from_env(**{**config.__dict__, "token": token})
        print(f"taskserver: listening beyond loopback without a token; generated one (shown once):\n"
              f"  {token}\npass it to workers with --token or TASKSERVER_TOKEN", file=sys.stderr, flush=True)
    app = create_app(config)
    server = make_server(app, config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"taskserver listening on http://{host}:{server.effective_port}", flush=True)
    why = {"signal": "its server loop ended"}

    def interrupt(signum: int, _frame) -> None:
        """Ctrl-C and a service manager's stop end the same way (waitress ends its loop on KeyboardInterrupt)."""
        why["signal"] = f"{signal.Signals(signum).name} received"
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.run()
    finally:
        log.info("coordinator on http://%s:%s stopping (%s); workers keep their tasks and report when one is"
                 " back", host, server.effective_port, why["signal"])
        app.extensions["taskserver.stop"].set()
        server.close()
        app.extensions["taskserver.store"].close()
        log.info("coordinator stopped")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """Validate the whole sheet, then queue its rows in one transaction."""
    from .sheet import as_dry_run, spool_sheet

    config = _config(args)
    imported = spool_sheet(args.sheet, chunk=config.chunk, timezone=config.timezone)
    if args.dry_run:
        if imported.schedules:
            print(f"{args.sheet}: {len(imported.schedules)} row(s) on a schedule are left out of the dry run")
        imported.schedules, imported.convert = [], as_dry_run
    with _store(config, create=args.create) as store, contextlib.closing(imported):
        result = imported.into(store)
        updated = f" ({result.updated} with a corrected password)" if result.updated else ""
        what = "dry run(s)" if args.dry_run else "task(s)"
        print(f"{args.sheet}: {result.added} {what} added, {result.existing} already in {store.url}{updated}")
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace) -> int:
    """Give failed tasks (cancelled ones too, with --cancelled) another round of attempts; list them."""
    config = _config(args)
    with _store(config) as store:
        ids = store.requeue(args.ids or None, args.nvr.lower() if args.nvr else None, cancelled=args.cancelled,
                            by=f"by taskserver requeue ({_who()})")
    shown = ", ".join(map(str, ids[:50])) + (f" and {len(ids) - 50} more" if len(ids) > 50 else "")
    print(f"{len(ids)} task(s) queued again{': ' + shown if ids else ''}")
    return EXIT_OK


def _who() -> str:
    """The user and machine a command runs as, for the change feed and the coordinator's log."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def cmd_new_key(args: argparse.Namespace) -> int:
    """Print a new random key."""
    from .vault import new_key

    print(new_key())
    return EXIT_OK


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Re-seal with the newest key: give TASKSERVER_SECRET_KEY="new,old" (or a key file, newest first)."""
    with _store(_config(args)) as store:
        count = store.rotate_key()
    print(f"{count} password(s) sealed with the newest key; the old key is no longer needed")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write the report from the database (safe while the coordinator runs)."""
    from .report import export

    config = _config(args)
    with _store(config) as store:
        path = export(store, args.report, config.paper)
    print(f"report written to {path}")
    return EXIT_OK


def cmd_migrate_db(args: argparse.Namespace) -> int:
    """Copy tasks, attempts, NVR state, events and settings, ids and leases included, in one transaction.

    Stop the coordinators first, migrate, then start them on the new database:
    workers keep their leases and simply report to the new coordinators.
    """
    from pathlib import Path

    from .errors import ConfigError
    from .store import open_store, sqlite_path

    path = sqlite_path(args.source)
    if path is not None and not Path(path).is_file():  # opening it would make an empty one
        raise ConfigError(f"{path} not found: --from names the database now in use")
    vault = Config.from_env(db=args.source).vault()  # the new database needs the same key
    policy = Config().policy()
    source = open_store(args.source, policy, vault, create=False)
    try:
        target = open_store(args.target, policy, vault)
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
    import time

    import requests

    from . import console

    url = console.coordinator_url(args.url)
    headers = console.headers(args.token)
    last, down = None, None
    with console.piped():
        while True:
            if last:
                headers["Last-Event-ID"] = last
            try:
                with requests.get(url + "/api/events", headers=headers, stream=True, timeout=(10, 60)) as response:
                    if response.status_code in (401, 403):
                        print(f"taskserver: {url} refused the token (HTTP {response.status_code}); give it with"
                              " --token or TASKSERVER_TOKEN", file=sys.stderr)
                        return EXIT_ERROR
                    if response.status_code != 200:
                        raise requests.HTTPError(f"HTTP {response.status_code}")
                    if down:
                        print(f"taskserver: {url} answers again", file=sys.stderr, flush=True)
                    down = None
                    kind = None
                    for line in response.iter_lines(decode_unicode=True):
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind == "task":
                            print(console.event_line(json.loads(line[6:])), flush=True)
                        elif line.startswith("data: ") and kind == "summary":
                            print(console.summary_line(json.loads(line[6:])), flush=True)
            except requests.RequestException as exc:
                problem = console.why_unreachable(url, exc) if not isinstance(exc, requests.HTTPError) else (
                    f"{url} answered {exc}")
                if problem != down:  # once per outage, not once per retry
                    print(f"taskserver: {problem}; retrying every 2 s (Ctrl-C to stop)", file=sys.stderr, flush=True)
                    down = problem
                time.sleep(2)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Fetch /api/status and print the run, its NVRs and its workers in human units."""
    from . import console

    url = console.coordinator_url(args.url)
    try:
        status = console.fetch_status(url, args.token)
    except console.Unreachable as exc:
        print(f"taskserver: {exc}", file=sys.stderr)
        return EXIT_ERROR
    with console.piped():
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print("\n".join(console.status_lines(url, status)))
    return EXIT_OK
