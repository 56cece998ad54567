"""The `taskclient` command (also `python -m taskclient`): run N workers against a coordinator.

Its settings are declared in `taskclient/config.py` (options, TASKCLIENT_* variables,
a config file); this module checks them and turns them into what the workers need.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .config import HostConfig
from .errors import SetupError
from .pool import EXIT_USAGE, run_pool
from .runners import make_runner
from .tls import TLSChoice
from .upload import Uploader, remote_name
from .worker import Settings


def parser() -> argparse.ArgumentParser:
    """Every setting as an option (see taskclient/config.py)."""
    p = argparse.ArgumentParser(prog="taskclient", description="Pull tasks from a taskserver and run them.",
                                epilog="Each option may also come from a TASKCLIENT_* variable or the --config"
                                       " file (key = the option without --); options win, then variables.")
    HostConfig.add_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse and check the settings, run the pool; the exit code says how it ended."""
    args = parser().parse_args(argv)
    try:
        config = HostConfig.load(args)
        settings = worker_settings(config)
    except (SetupError, OSError) as exc:
        print(f"taskclient: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_pool(settings, config.workers, config.start_method)


def footage(config: HostConfig) -> dict:
    """The exported files' settings for the hikload runner (window, format, join, transcode, layout)."""
    return {"window": config.window, "format": config.format, "join": config.join, "transcode": config.transcode,
            "layout": config.layout}


def worker_settings(config: HostConfig) -> Settings:
    """What every worker process gets; checks here fail once, at start, rather than in every worker."""
    options = ({"command": config.command} if config.runner == "command"
               else {"timeout": config.nvr_timeout, "ca_file": config.nvr_ca_file, "verify": config.verify,
                     "insecure": config.nvr_insecure, "fingerprints": TLSChoice.parse_pins(config.nvr_fingerprint),
                     "min_free": config.min_free, "footage": footage(config)})
    if config.verify == "ffprobe" and shutil.which("ffprobe") is None:
        raise SetupError("--verify ffprobe needs ffprobe on PATH (install ffmpeg)")
    downloads = Path(config.downloads).resolve()
    downloads.mkdir(parents=True, exist_ok=True)
    make_runner(config.runner, options)
    upload = None
    if config.upload:
        # A local or network path is made absolute, so that each file's recorded location says where it is.
        destination = config.upload if remote_name(config.upload) else str(Path(config.upload).resolve())
        upload = Uploader(destination, downloads, delete=config.upload_delete, rclone=config.rclone,
                          rclone_config=config.upload_config)
        upload.check()
    settings = Settings(urls=list(config.server), downloads=str(downloads), token=config.token,
                        runner=config.runner, runner_options=options, ca_file=config.ca_file,
                        min_free=config.min_free, service=config.service, drained_poll=config.drained_poll,
                        upload=upload)
    if config.name:
        settings.host = config.name
    return settings
