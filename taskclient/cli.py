"""The `taskclient` command (also `python -m taskclient`): run N workers against a coordinator."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .errors import SetupError
from .pool import EXIT_USAGE, run_pool
from .runners import RUNNERS, make_runner
from .worker import Settings


def parser() -> argparse.ArgumentParser:
    """Options; the token and URLs may also come from TASKSERVER_TOKEN / TASKSERVER_URL."""
    p = argparse.ArgumentParser(prog="taskclient", description="Pull tasks from a taskserver and run them.")
    p.add_argument("--server", action="append", dest="servers", metavar="URL",
                   help="coordinator URL (repeat for fail-over; default $TASKSERVER_URL or http://127.0.0.1:8080)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--downloads", default="downloads", help="folder for the task folders (default ./downloads)")
    p.add_argument("--token", default=os.environ.get("TASKSERVER_TOKEN"), help="bearer token (default $TASKSERVER_TOKEN)")
    p.add_argument("--ca-file", help="CA bundle to verify an HTTPS coordinator")
    p.add_argument("--runner", default="hikload", choices=sorted(RUNNERS), help="what to run (default hikload)")
    p.add_argument("--command", help="command template for --runner command, e.g. 'export.sh {server} {folder}'")
    p.add_argument("--nvr-timeout", type=float, default=30.0, help="seconds to wait for an NVR answer (default 30)")
    p.add_argument("--nvr-ca-file", help="CA bundle for NVRs reached over HTTPS")
    p.add_argument("--verify", choices=["ffprobe"],
                   help="also check each video's duration against its time span (needs ffmpeg's ffprobe)")
    p.add_argument("--name", help="this host's name in the coordinator's worker list (default: hostname)")
    p.add_argument("--start-method", choices=["spawn", "fork", "forkserver"], default="spawn",
                   help="multiprocessing start method (default spawn, as on Windows)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse options, check them, run the pool; the exit code says how it ended."""
    args = parser().parse_args(argv)
    urls = args.servers or [os.environ.get("TASKSERVER_URL", "http://127.0.0.1:8080")]
    options = ({"command": args.command} if args.runner == "command"
               else {"timeout": args.nvr_timeout, "ca_file": args.nvr_ca_file, "verify": args.verify})
    try:
        if args.workers < 1:
            raise SetupError("--workers must be at least 1")
        if args.verify == "ffprobe" and shutil.which("ffprobe") is None:
            raise SetupError("--verify ffprobe needs ffprobe on PATH (install ffmpeg)")
        downloads = Path(args.downloads).resolve()
        downloads.mkdir(parents=True, exist_ok=True)
        make_runner(args.runner, options)  # fail here, once, rather than in every worker
    except (SetupError, OSError) as exc:
        print(f"taskclient: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = Settings(urls=urls, downloads=str(downloads), token=args.token, runner=args.runner,
                        runner_options=options, ca_file=args.ca_file)
    if args.name:
        settings.host = args.name
    return run_pool(settings, args.workers, args.start_method)
