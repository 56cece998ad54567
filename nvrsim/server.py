"""A simulated Hikvision NVR: the part of ISAPI that hikload and taskclient use.

It speaks HTTP/1.1 (or HTTPS with a self-signed certificate) with digest
authentication, lists channels (Streaming, IP and analog lists) with their names,
tells its clock, searches recordings and pictures page by page (by record type too),
streams each recording's deterministic bytes (cut at a keyframe when the playback
URI asks for part of it), and serves pictures to a plain GET of their URI.
Switches (faults.py) make it behave like real devices on bad days or with other
firmware; `/sim/faults` (POST, JSON) changes them at run time and `/sim/stats`
reports what happened, so tests can assert on the device's side too.
"""
from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from . import auth, search
from .faults import Faults, Stats
from .recordings import Catalogue, parse_playback_uri

XMLNS = "http://www.hikvision.com/ver20/XMLSchema"
_clock_lock = threading.Lock()


@dataclass
class Device:
    """The simulated NVR's state, shared by all request threads."""

    catalogue: Catalogue
    username: str
    password: str
    name: str = "nvrsim"
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    nonces: set = field(default_factory=set)
    analog: int = 0  # the first `analog` channels are analog inputs, the rest IP cameras
    failed_logins: int = 0
    locked_until: float = 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "App-webs/"
    device: Device

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by http.server
        pass  # quiet: tests read the simulator's stdout for its address only

    # --- routing ---------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        faults = self.device.faults
        while faults.stall and path.startswith("/ISAPI/"):
            time.sleep(0.1)
        if path == "/sim/stats":
            return self.send_text(200, json.dumps(asdict(self.device.stats)), "application/json")
        if path == "/sim/faults" and method == "POST":
            return self._set_faults(body)
        with self.device.lock:
            self.device.stats.requests += 1
        if faults.redirect_to and path.startswith("/ISAPI/"):
            with self.device.lock:
                self.device.stats.redirects += 1
            return self.send_text(302, "", "text/plain", headers={"Location": faults.redirect_to + path})
        if not auth.check(self, method):
            return None
        routes = {
            "/ISAPI/System/deviceInfo": ("info", self._device_info, ("GET",)),
            "/ISAPI/System/time": ("time", self._time, ("GET",)),
            "/ISAPI/Streaming/channels": ("channels", self._channels, ("GET",)),
            "/ISAPI/ContentMgmt/InputProxy/channels": ("channels", self._proxy_channels, ("GET",)),
            "/ISAPI/System/Video/inputs/channels": ("channels", self._analog_channels, ("GET",)),
            "/ISAPI/ContentMgmt/search": ("search", self._search, tuple(faults.search_methods)),
            "/ISAPI/ContentMgmt/download": ("download", self._download, tuple(faults.download_methods)),
        }
        area, handler, methods = routes.get(path, (None, None, ()))
        if handler is None and path.startswith("/ISAPI/Streaming/tracks/"):
            area, handler, methods = "download", self._picture, ("GET",)
        if handler is None:
            return self._status(404, "Invalid Operation", "notSupport")
        if method not in methods:
            return self._status(403, "Invalid Operation", "methodNotAllowed")
        if area in faults.xml_busy:
            with self.device.lock:
                self.device.stats.busy_answers += 1
            return self._status(200, "Device Busy", "deviceBusy", code=2)
        return handler(body)

    # --- HTTP helpers ------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_text(self, code: int, text: str, ctype: str = "application/xml", headers: dict | None = None) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        drip = self.device.faults.drip
        if drip and code == 200 and self.path.startswith("/ISAPI/"):
            for at in range(len(data)):
                self.wfile.write(data[at:at + 1])
                self.wfile.flush()
                time.sleep(drip)
            return
        self.wfile.write(data)

    def _status(self, http: int, text: str, sub: str, code: int | None = None) -> None:
        text = self.device.faults.error_text or text
        code = code if code is not None else (3 if http >= 500 else 4)
        self.send_text(
            http,
            f'<?xml version="1.0" encoding="UTF-8"?><ResponseStatus version="2.0" xmlns="{XMLNS}">'
            f"<requestURL>{escape(self.path)}</requestURL><statusCode>{code}</statusCode>"
            f"<statusString>{escape(text)}</statusString><subStatusCode>{sub}</subStatusCode></ResponseStatus>",
        )

    # --- ISAPI resources ---------------------------------------------------------
    def _device_info(self, body: bytes) -> None:
        self.send_text(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?><DeviceInfo version="2.0" xmlns="{XMLNS}">'
            f"<deviceName>{escape(self.device.name)}</deviceName><deviceID>sim-0001</deviceID>"
            "<model>DS-7608NI-SIM</model><serialNumber>DS-SIM0001</serialNumber>"
            "<firmwareVersion>V4.0.0</firmwareVersion><deviceType>NVR</deviceType></DeviceInfo>",
        )

    def _time(self, body: bytes) -> None:
        faults = self.device.faults
        with _clock_lock:
            if os.environ.get("TZ") != faults.zone:
                os.environ["TZ"] = faults.zone
                time.tzset()
            local = time.localtime(time.time() + faults.clock_offset)
        offset = local.tm_gmtoff
        sign = "+" if offset >= 0 else "-"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"
        self.send_text(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?><Time version="2.0" xmlns="{XMLNS}">'
            f"<timeMode>{escape(faults.time_mode)}</timeMode><localTime>{stamp}</localTime>"
            f"<timeZone>{escape(faults.zone)}</timeZone></Time>",
        )

    def _channel_name(self, number: int) -> str:
        given = self.device.faults.names.get(str(number))
        return given if given is not None else f"{'Analog' if number <= self.device.analog else 'Camera'} {number:02d}"

    def _channels(self, body: bytes) -> None:
        if "streaming" in self.device.faults.refuse_lists:
            return self._status(403, "Invalid Operation", "invalidOperation")
        items = "".join(
            f"<StreamingChannel><id>{track}</id><channelName>{escape(self._channel_name(track // 100))}</channelName>"
            "<enabled>true</enabled></StreamingChannel>"
            for track in self.device.catalogue.tracks()
        )
        self.send_text(200, f'<?xml version="1.0" encoding="UTF-8"?><StreamingChannelList version="2.0" '
                            f'xmlns="{XMLNS}">{items}</StreamingChannelList>')

    def _proxy_channels(self, body: bytes) -> None:
        if "proxy" in self.device.faults.refuse_lists:
            return self._status(403, "Invalid Operation", "invalidOperation")
        numbers = [t // 100 for t in self.device.catalogue.tracks() if t // 100 > self.device.analog]
        items = "".join(f"<InputProxyChannel><id>{n}</id><name>{escape(self._channel_name(n))}</name>"
                        f"<sourceInputPortDescriptor><ipAddress>192.0.2.{n}</ipAddress></sourceInputPortDescriptor>"
                        "</InputProxyChannel>" for n in numbers)
        self.send_text(200, f'<?xml version="1.0" encoding="UTF-8"?><InputProxyChannelList version="2.0" '
                            f'xmlns="{XMLNS}">{items}</InputProxyChannelList>')

    def _analog_channels(self, body: bytes) -> None:
        if "inputs" in self.device.faults.refuse_lists:
            return self._status(403, "Invalid Operation", "invalidOperation")
        numbers = [t // 100 for t in self.device.catalogue.tracks() if t // 100 <= self.device.analog]
        items = "".join(f"<VideoInputChannel><id>{n}</id><inputPort>{n}</inputPort>"
                        f"<name>{escape(self._channel_name(n))}</name></VideoInputChannel>" for n in numbers)
        self.send_text(200, f'<?xml version="1.0" encoding="UTF-8"?><VideoInputChannelList version="2.0" '
                            f'xmlns="{XMLNS}">{items}</VideoInputChannelList>')

    def _search(self, body: bytes) -> None:
        faults = self.device.faults
        with self.device.lock:
            self.device.stats.searches += 1
        if faults.xxe:
            return self.send_text(
                200, f'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE ResponseStatus [<!ENTITY xxe SYSTEM '
                     f'"{escape(faults.xxe)}">]><ResponseStatus version="2.0" xmlns="{XMLNS}"><statusCode>4'
                     "</statusCode><statusString>&xxe;</statusString><subStatusCode>invalidOperation"
                     "</subStatusCode></ResponseStatus>")
        try:
            query = search.parse(body, faults.position_field)
        except search.BadSearch:
            return self._status(400, "Invalid XML Content", "badXmlContent", code=6)
        if (faults.no_pictures and query["track"] % 100 == 3) or (faults.no_record_types and query["types"]):
            return self._status(200, "Invalid Operation", "notSupport", code=4)
        self.send_text(200, search.answer(self.device, query, self.headers.get("Host", "127.0.0.1")))

    def _download(self, body: bytes) -> None:
        from xml.etree import ElementTree as ET

        uri = ""
        if body:
            try:
                root = ET.fromstring(body)
                uri = next((el.text or "" for el in root.iter() if el.tag.endswith("playbackURI")), "")
            except ET.ParseError:
                return self._status(400, "Invalid XML Content", "badXmlContent", code=6)
        parsed = parse_playback_uri(uri)
        rec = self.device.catalogue.locate(*parsed[:3]) if parsed else None
        if rec is None:
            return self._status(404, "Invalid Operation", "noRecordFound")
        self._send_recording(rec.cut(parsed[2], parsed[3] or rec.end))

    def _picture(self, body: bytes) -> None:
        """A picture, fetched by a plain GET of its playback URI's path and query."""
        parsed = parse_playback_uri(self.path)
        if self.device.faults.no_pictures:
            return self._status(200, "Invalid Operation", "notSupport", code=4)
        pictures = self.device.catalogue.pictures(parsed[0], parsed[2], parsed[2] + timedelta(seconds=1)) \
            if parsed else []
        if not pictures or pictures[0].start != parsed[2]:
            return self._status(404, "Invalid Operation", "noRecordFound")
        self._send_recording(pictures[0], "image/jpeg")

    def _send_recording(self, rec, kind: str = "video/mp4") -> None:
        dev = self.device
        if dev.faults.download_error:
            return self._status(dev.faults.download_error, "Device Error", "deviceError")
        with dev.lock:
            if dev.faults.busy_above is not None and dev.stats.concurrent >= dev.faults.busy_above:
                dev.stats.busy_answers += 1
                busy = True
            else:
                busy = False
                dev.stats.concurrent += 1
                dev.stats.max_concurrent = max(dev.stats.max_concurrent, dev.stats.concurrent)
                dev.stats.downloads_started += 1
                drop_after = dev.faults.drop_after
                if dev.faults.drop_skip > 0:
                    dev.faults.drop_skip -= 1
                    drop_after = None
                elif drop_after is not None and dev.faults.drop_count != 0:
                    dev.faults.drop_count -= 1 if dev.faults.drop_count > 0 else 0
                else:
                    drop_after = None
                mode, delay, framing = dev.faults.drop_mode, dev.faults.delay, dev.faults.framing
        if busy:
            return self._status(503, "Device Busy", "deviceBusy", code=2)
        if dev.faults.body is not None and kind.startswith("video"):
            rec = _Text(dev.faults.body.encode())
        try:
            self._stream(rec, drop_after, mode, delay, framing, kind)
        finally:
            with dev.lock:
                dev.stats.concurrent -= 1

    def _stream(self, rec, drop_after: int | None, mode: str, delay: float, framing: str, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if framing == "length":
            self.send_header("Content-Length", str(rec.size))
        elif framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        chunked = framing == "chunked"
        sent = 0
        blocks = rec.chunks() if hasattr(rec, "chunks") else [rec.content()]
        for block in blocks:
            if drop_after is not None and sent + len(block) > drop_after:
                part = block[: max(0, drop_after - sent)]
                self.wfile.write(_frame(part, chunked) if part else b"")
                self.wfile.flush()
                with self.device.lock:
                    self.device.stats.downloads_dropped += 1
                    self.device.stats.bytes_sent += len(part)
                _cut(self.connection, mode)
                self.close_connection = True
                return
            self.wfile.write(_frame(block, chunked))
            sent += len(block)
            with self.device.lock:
                self.device.stats.bytes_sent += len(block)
            if delay:
                time.sleep(delay)
        if chunked and not self.device.faults.chunk_end:
            self.wfile.flush()
            _cut(self.connection, "close")
            self.close_connection = True
            return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        with self.device.lock:
            self.device.stats.downloads_completed += 1
        if framing == "close":
            self.wfile.flush()
            _cut(self.connection, "close")

    def _set_faults(self, body: bytes) -> None:
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            refuse_for = float(changes.pop("refuse_for", 0) or 0)
            known = {f.name for f in fields(Faults)}
            with self.device.lock:
                for key, value in changes.items():
                    if key not in known:
                        raise ValueError(f"unknown fault {key!r}")
                    setattr(self.device.faults, key, value)
                if refuse_for:
                    self.device.faults.refuse_until = time.time() + refuse_for
                if changes.get("lock_after") is None and "lock_after" in changes:
                    self.device.locked_until = 0.0
        except ValueError as exc:
            return self.send_text(400, json.dumps({"error": str(exc)}), "application/json")
        return self.send_text(200, json.dumps(asdict(self.device.faults)), "application/json")


class _Text:
    """What a hostile device sends in place of a recording (the `body` fault)."""

    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def content(self) -> bytes:
        return self.data


def _frame(data: bytes, chunked: bool) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data


class Server(ThreadingHTTPServer):
    """Threaded HTTP(S) server that resets connections while the device 'reboots'."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, device: Device, tls: ssl.SSLContext | None = None):
        handler = type("BoundHandler", (Handler,), {"device": device})
        super().__init__(address, handler)
        self.device = device
        if tls is not None:
            # The handshake happens in the request's thread, so a silent client blocks nobody.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def verify_request(self, request, client_address) -> bool:
        with self.device.lock:
            refused = time.time() < self.device.faults.refuse_until or self.device.faults.refuse_next > 0
            if self.device.faults.refuse_next > 0:
                self.device.faults.refuse_next -= 1
        if refused:
            _cut(request, "reset")
            return False
        return True

    def handle_error(self, request, client_address) -> None:
        """A client that stops a download early is normal, not an error worth a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError,
                              TimeoutError)):
            return
        super().handle_error(request, client_address)


def _cut(sock: socket.socket, mode: str) -> None:
    """End a connection the way a crashing device does: FIN or RST."""
    try:
        if mode == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
