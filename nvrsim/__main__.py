"""`python -m nvrsim`: run a simulated NVR until interrupted."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from .faults import AREAS, CHANNEL_LISTS, Faults
from .recordings import Catalogue
from .server import Device, Server


def _list(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        wrong = [v for v in values if v not in choices]
        if wrong:
            raise argparse.ArgumentTypeError(f"{', '.join(wrong)}: choose from {', '.join(choices)}")
        return values
    return parse


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default, except for switches that are off (None)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every fault switch is off unless given."""
    p = argparse.ArgumentParser(prog="nvrsim", description="Simulated Hikvision NVR (ISAPI subset).",
                                formatter_class=_Help)
    d = Faults()
    device = p.add_argument_group("the device")
    device.add_argument("--host", default="127.0.0.1", help="address to listen on")
    device.add_argument("--port", type=int, default=0, help="0 picks a free port; the address is printed")
    device.add_argument("--user", default="admin", help="the device's user")
    device.add_argument("--password", default=None,
                        help="device password (default: $NVRSIM_PASSWORD, else 'sim-password'); prefer the variable")
    device.add_argument("--name", default="nvrsim", help="device name in deviceInfo")
    device.add_argument("--channels", type=int, default=4, help="cameras; tracks 101, 201, ...")
    device.add_argument("--analog", type=int, default=0,
                        help="the first N channels are analog inputs (System/Video/inputs), the rest IP cameras"
                             " (InputProxy): a hybrid DVR")
    device.add_argument("--start", type=datetime.fromisoformat, default=datetime(2026, 1, 1),
                        help="first recording's start, device-local time")
    device.add_argument("--end", type=datetime.fromisoformat, default=datetime(2026, 1, 2),
                        help="last recording's end, device-local time")
    device.add_argument("--interval", type=int, default=600, help="seconds per recording")
    device.add_argument("--size", type=int, default=256 * 1024, help="nominal bytes per recording")
    device.add_argument("--payload", choices=["synthetic", "realistic"], default="synthetic",
                        help="synthetic: numbered pseudo-random blocks (no ffmpeg needed); realistic: the device's"
                             " IMKH + MPEG-PS stream with real video (encoded once with ffmpeg, cached in"
                             " $NVRSIM_CACHE or ~/.cache/nvrsim)")
    device.add_argument("--codec", choices=["h264", "h265"], default="h264", help="the realistic payload's codec")
    device.add_argument("--resolution", default="160x120", help="the realistic payload's picture size")
    device.add_argument("--fps", type=int, default=4, help="the realistic payload's frames per second")
    device.add_argument("--gop", type=int, default=2, help="seconds between keyframes (where the device cuts)")
    device.add_argument("--noise", type=int, default=0,
                        help="grain in the realistic payload's pictures (0-20): camera-like bitrates")
    device.add_argument("--picture-interval", type=int, default=300,
                        help="seconds between the pictures (track x03) of each channel")
    device.add_argument("--channel-name", action="append", default=[], metavar="N=NAME",
                        help="name of channel N on every channel list (repeatable)")
    device.add_argument("--video", action="store_true", help="serve a real MP4 clip (made with ffmpeg) as each recording")
    device.add_argument("--video-seconds", type=float,
                        help="length of that clip (default: the recording interval; shorter simulates a cut file)")
    device.add_argument("--https", action="store_true",
                        help="serve HTTPS with a new self-signed certificate; its SHA-256 fingerprint is printed")
    device.add_argument("--cert", nargs=2, metavar=("CERT", "KEY"),
                        help="with --https: serve this certificate chain and key instead (e.g. signed by a site's CA)")
    device.add_argument("--clock-offset", type=float, default=d.clock_offset,
                        help="the device clock runs this many seconds ahead (negative: behind)")
    device.add_argument("--zone", default=d.zone, help="POSIX TZ the device reports in System/time")
    device.add_argument("--time-mode", default=d.time_mode, help="timeMode in System/time (NTP or manual)")
    faults = p.add_argument_group("download faults")
    faults.add_argument("--busy-above", type=int, help="answer 503 above K concurrent downloads")
    faults.add_argument("--drop-after", type=int, help="cut downloads after this many bytes")
    faults.add_argument("--drop-count", type=int, default=d.drop_count, help="cut only the first N downloads (-1: all)")
    faults.add_argument("--drop-skip", type=int, default=d.drop_skip, help="let the first N downloads through uncut")
    faults.add_argument("--drop-mode", choices=["close", "reset"], default=d.drop_mode,
                        help="how a download is cut: a clean close (FIN) or a reset (RST)")
    faults.add_argument("--framing", choices=["length", "chunked", "close"], default=d.framing,
                        help="how a download's end is marked: Content-Length, chunked encoding, or the connection's close")
    faults.add_argument("--no-chunk-end", action="store_true", help="chunked: close without the terminating chunk")
    faults.add_argument("--no-size", action="store_true", help="playback URIs without size=")
    faults.add_argument("--download-error", type=int, help="answer every download with this HTTP status")
    faults.add_argument("--refuse-for", type=float, default=0.0, help="reset connections for S seconds (a reboot)")
    faults.add_argument("--delay", type=float, default=d.delay, help="pause per 64 KiB block sent")
    faults.add_argument("--drip", type=float, default=d.drip,
                        help="send XML answers one byte every this many seconds (a device alive but never done)")
    firmware = p.add_argument_group("firmware differences")
    firmware.add_argument("--page-cap", type=int, help="at most K items per search page, MORE on every full page")
    firmware.add_argument("--position-field", default=d.position_field,
                          choices=["both", "searchResultPosition", "searchResultPostion"],
                          help="which spelling of the search position the device honours (the other is ignored)")
    firmware.add_argument("--total-matches", action="store_true", help="give totalMatches in search answers")
    firmware.add_argument("--ignore-track", action="store_true", help="search answers every track (ignores trackIDList)")
    firmware.add_argument("--clip", action="store_true", help="clip border items' times to the search range")
    firmware.add_argument("--search-methods", type=_list(("GET", "POST")), default=d.search_methods,
                          help="methods the search accepts (others: 403 Invalid Operation)")
    firmware.add_argument("--download-methods", type=_list(("GET", "POST")), default=d.download_methods,
                          help="methods the download accepts (others: 403 Invalid Operation)")
    firmware.add_argument("--refuse-lists", type=_list(CHANNEL_LISTS), default=d.refuse_lists,
                          help=f"channel lists answering Invalid Operation, of {', '.join(CHANNEL_LISTS)}")
    firmware.add_argument("--xml-busy", type=_list(AREAS), default=d.xml_busy,
                          help=f"areas answering statusCode 2 deviceBusy in XML, of {', '.join(AREAS)}")
    firmware.add_argument("--no-pictures", action="store_true", help="picture tracks (x03) answer notSupport")
    firmware.add_argument("--no-record-types", action="store_true",
                          help="a search filtered by record type (metadataList) answers notSupport")
    firmware.add_argument("--lock-after", type=int, help="lock logins after K failed ones (as devices do)")
    firmware.add_argument("--lock-for", type=float, default=d.lock_for, help="seconds a lock lasts")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the simulator and serve until SIGINT/SIGTERM."""
    import signal
    import time

    args = parse_args(argv)
    args.password = args.password or os.environ.get("NVRSIM_PASSWORD", "sim-password")
    if args.end <= args.start:
        print("nvrsim: --end must be after --start", file=sys.stderr)
        return 2
    faults = Faults(
        busy_above=args.busy_above, drop_after=args.drop_after, drop_count=args.drop_count, drop_skip=args.drop_skip,
        drop_mode=args.drop_mode, refuse_until=time.time() + args.refuse_for, delay=args.delay, drip=args.drip,
        framing=args.framing, chunk_end=not args.no_chunk_end, no_size=args.no_size,
        download_error=args.download_error, page_cap=args.page_cap, position_field=args.position_field,
        total_matches=args.total_matches, ignore_track=args.ignore_track, clip=args.clip,
        search_methods=args.search_methods, download_methods=args.download_methods,
        refuse_lists=args.refuse_lists, xml_busy=args.xml_busy, lock_after=args.lock_after, lock_for=args.lock_for,
        clock_offset=args.clock_offset, zone=args.zone, time_mode=args.time_mode, no_pictures=args.no_pictures,
        no_record_types=args.no_record_types, names=dict(n.split("=", 1) for n in args.channel_name if "=" in n),
    )
    video = pattern = None
    if args.video or args.video_seconds:
        from .recordings import make_clip

        video = make_clip(args.video_seconds or args.interval)
    if args.payload == "realistic":
        from .payload import load_pattern

        pattern = load_pattern(args.codec, args.resolution, args.fps, args.gop, args.noise)
    catalogue = Catalogue(args.channels, args.start, args.end, args.interval, args.size, video, pattern, args.gop,
                          args.picture_interval)
    device = Device(catalogue, args.user, args.password, args.name, faults, analog=args.analog)
    tls = fingerprint = None
    if args.https:
        import ssl

        from .tlscert import make_self_signed

        if args.cert:
            cert, key = args.cert
        else:
            folder = Path(tempfile.mkdtemp(prefix="nvrsim-tls-"))
            cert, key, fingerprint = make_self_signed(folder, args.host)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    server = Server((args.host, args.port), device, tls)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    host, port = server.server_address[:2]
    if fingerprint:
        print(f"nvrsim certificate SHA-256 {fingerprint}", flush=True)
    print(f"nvrsim listening on {'https' if tls else 'http'}://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
