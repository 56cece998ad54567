"""The `taskclient` command (also `python -m taskclient`): run N workers against a coordinator."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from .errors import SetupError
from .footage import DEFAULT_WINDOW
from .layout import DEFAULT as LAYOUT
from .layout import FIELDS
from .media import FORMATS
from .pieces import WINDOWS
from .pool import EXIT_USAGE, run_pool
from .runners import RUNNERS, make_runner
from .tls import TLSChoice
from .worker import Settings

DEFAULT_MIN_FREE = "2G"


def parse_size(text: str) -> int:
    """`2G`, `500M`, `0`: bytes (K, M, G, T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2G, 500M, 0)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


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
    p.add_argument("--nvr-fingerprint", action="append", default=[], metavar="HOST[:PORT]=SHA256",
                   help="accept exactly this certificate (SHA-256 fingerprint) from that HTTPS NVR; repeatable")
    p.add_argument("--nvr-insecure", action="store_true",
                   help="accept any certificate from HTTPS NVRs: encrypted but not authenticated (lab use only)")
    p.add_argument("--min-free", type=parse_size, default=parse_size(DEFAULT_MIN_FREE), metavar="SIZE",
                   help=f"keep this much free in --downloads: below it the host claims nothing (default {DEFAULT_MIN_FREE})")
    p.add_argument("--verify", choices=["ffprobe"],
                   help="also check each video's duration against its time span (needs ffmpeg's ffprobe)")
    p.add_argument("--name", help="this host's name in the coordinator's worker list (default: hostname)")
    p.add_argument("--start-method", choices=["spawn", "fork", "forkserver"], default="spawn",
                   help="multiprocessing start method (default spawn, as on Windows)")
    add_footage_options(p)
    return p


# --- footage: what the exported files look like (README "Exported files") -------------------
def add_footage_options(p: argparse.ArgumentParser) -> None:
    """The export's window, format, joining and layout on this host."""
    group = p.add_argument_group("exported files")
    group.add_argument("--window", choices=WINDOWS, default=DEFAULT_WINDOW,
                       help="for rows without a window column: whole stored files, the device's cut of the window"
                            " (keyframe accurate), or exact (trimmed with ffmpeg) (default device)")
    group.add_argument("--format", choices=FORMATS, default="raw",
                       help="raw: the device's stream as sent (.ps for Hikvision's MPEG-PS); mp4 or mkv: remuxed"
                            " with ffmpeg, no re-encoding (default raw)")
    group.add_argument("--join", action="store_true",
                       help="join each task's pieces into one file per camera (needs --format mp4 or mkv)")
    group.add_argument("--transcode", choices=["h264"],
                       help="re-encode H.265 material to H.264 (needs --format mp4 or mkv; H.264 is copied)")
    group.add_argument("--layout", default=LAYOUT, metavar="TEMPLATE",
                       help="folders and file name under --downloads, from " + ", ".join("{" + f + "}" for f in FIELDS) +
                            f" (default {LAYOUT})")


def footage_options(args: argparse.Namespace) -> dict:
    """The runner's `footage` settings from the parsed options."""
    return {"window": args.window, "format": args.format, "join": args.join, "transcode": args.transcode,
            "layout": args.layout}


def main(argv: list[str] | None = None) -> int:
    """Parse options, check them, run the pool; the exit code says how it ended."""
    args = parser().parse_args(argv)
    urls = args.servers or [os.environ.get("TASKSERVER_URL", "http://127.0.0.1:8080")]
    try:
        options = ({"command": args.command} if args.runner == "command"
                   else {"timeout": args.nvr_timeout, "ca_file": args.nvr_ca_file, "verify": args.verify,
                         "insecure": args.nvr_insecure, "fingerprints": TLSChoice.parse_pins(args.nvr_fingerprint),
                         "min_free": args.min_free, "footage": footage_options(args)})
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
                        runner_options=options, ca_file=args.ca_file, min_free=args.min_free)
    if args.name:
        settings.host = args.name
    return run_pool(settings, args.workers, args.start_method)
