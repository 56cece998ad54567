"""`python -m nvrsim`: run a simulated NVR until interrupted."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from .recordings import Catalogue
from .server import Device, Faults, Server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every fault switch is off unless given."""
    p = argparse.ArgumentParser(prog="nvrsim", description="Simulated Hikvision NVR (ISAPI subset).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port; the address is printed")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default=os.environ.get("NVRSIM_PASSWORD", "sim-password"),
                   help="device password (default: $NVRSIM_PASSWORD or 'sim-password')")
    p.add_argument("--name", default="nvrsim", help="device name in deviceInfo")
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--start", type=datetime.fromisoformat, default=datetime(2026, 1, 1),
                   help="first recording's start, device-local time (default 2026-01-01T00:00)")
    p.add_argument("--end", type=datetime.fromisoformat, default=datetime(2026, 1, 2))
    p.add_argument("--interval", type=int, default=600, help="seconds per recording (default 600)")
    p.add_argument("--size", type=int, default=256 * 1024, help="nominal bytes per recording")
    p.add_argument("--busy-above", type=int, help="answer 503 above K concurrent downloads")
    p.add_argument("--drop-after", type=int, help="cut downloads after this many bytes")
    p.add_argument("--drop-count", type=int, default=-1, help="cut only the first N downloads")
    p.add_argument("--drop-skip", type=int, default=0, help="let the first N downloads through uncut")
    p.add_argument("--drop-mode", choices=["close", "reset"], default="close")
    p.add_argument("--refuse-for", type=float, default=0.0, help="reset connections for S seconds")
    p.add_argument("--delay", type=float, default=0.0, help="pause per 64 KiB block sent")
    p.add_argument("--video", action="store_true", help="serve a real MP4 clip (made with ffmpeg) as each recording")
    p.add_argument("--video-seconds", type=float,
                   help="length of that clip (default: the recording interval; shorter simulates a cut file)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the simulator and serve until SIGINT/SIGTERM."""
    import signal
    import time

    args = parse_args(argv)
    if args.end <= args.start:
        print("nvrsim: --end must be after --start", file=sys.stderr)
        return 2
    faults = Faults(
        busy_above=args.busy_above, drop_after=args.drop_after, drop_count=args.drop_count, drop_skip=args.drop_skip,
        drop_mode=args.drop_mode, refuse_until=time.time() + args.refuse_for, delay=args.delay,
    )
    video = None
    if args.video or args.video_seconds:
        from .recordings import make_clip

        video = make_clip(args.video_seconds or args.interval)
    catalogue = Catalogue(args.channels, args.start, args.end, args.interval, args.size, video)
    device = Device(catalogue, args.user, args.password, args.name, faults)
    server = Server((args.host, args.port), device)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    host, port = server.server_address[:2]
    print(f"nvrsim listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
