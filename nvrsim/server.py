"""A simulated Hikvision NVR: the part of ISAPI that hikload and taskclient use.

It speaks HTTP/1.1 with digest authentication, lists channels, searches
recordings page by page, and streams each recording's deterministic bytes. Fault
switches make it behave like real devices on bad days: busy above K concurrent
downloads, connections cut after X bytes, connections reset while "rebooting".
`/sim/faults` (POST, JSON) changes the switches at run time and `/sim/stats`
reports what happened, so tests can assert on the device's side too.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from .recordings import ISAPI_TIME, Catalogue, parse_playback_uri

XMLNS = "http://www.hikvision.com/ver20/XMLSchema"
REALM = "DS-nvrsim"


@dataclass
class Faults:
    """Switches that make the device misbehave; all off by default."""

    busy_above: int | None = None  # answer 503 when more downloads than this run at once
    drop_after: int | None = None  # cut a download after this many body bytes
    drop_count: int = -1  # how many downloads to cut (-1: all of them)
    drop_skip: int = 0  # let this many downloads through before cutting any
    drop_mode: str = "close"  # "close" (clean FIN) or "reset" (RST)
    refuse_until: float = 0.0  # reset every connection until this time (a reboot)
    delay: float = 0.0  # seconds to pause per block sent (a slow link)
    stall: bool = False  # accept requests and never answer (a hung device)


@dataclass
class Stats:
    """What the device saw, for assertions in tests."""

    downloads_started: int = 0
    downloads_completed: int = 0
    downloads_dropped: int = 0
    busy_answers: int = 0
    unauthorized: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    bytes_sent: int = 0
    searches: int = 0


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
        while self.device.faults.stall and path.startswith("/ISAPI/"):
            time.sleep(0.1)
        if path == "/sim/stats":
            return self._send(200, json.dumps(asdict(self.device.stats)), "application/json")
        if path == "/sim/faults" and method == "POST":
            return self._set_faults(body)
        if not self._authorized(method):
            return None
        routes = {
            ("GET", "/ISAPI/System/deviceInfo"): self._device_info,
            ("GET", "/ISAPI/Streaming/channels"): self._channels,
            ("POST", "/ISAPI/ContentMgmt/search"): self._search,
            ("GET", "/ISAPI/ContentMgmt/download"): self._download,
            ("POST", "/ISAPI/ContentMgmt/download"): self._download,
        }
        handler = routes.get((method, path))
        if handler is None:
            return self._status(404, "Invalid Operation", "notSupport")
        return handler(body)

    # --- HTTP helpers ------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, text: str, ctype: str = "application/xml", headers: dict | None = None) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, text: str, sub: str) -> None:
        self._send(
            code,
            f'<?xml version="1.0" encoding="UTF-8"?><ResponseStatus version="2.0" xmlns="{XMLNS}">'
            f"<requestURL>{escape(self.path)}</requestURL><statusCode>{3 if code >= 500 else 4}</statusCode>"
            f"<statusString>{text}</statusString><subStatusCode>{sub}</subStatusCode></ResponseStatus>",
        )

    # --- digest authentication (RFC 2617, qop=auth, MD5) --------------------------
    def _authorized(self, method: str) -> bool:
        fields = dict(
            (k, v1 or v2)
            for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', self.headers.get("Authorization", ""))
        )
        dev = self.device
        if fields.get("nonce") in dev.nonces and fields.get("username") == dev.username:
            ha1 = _md5(f"{dev.username}:{REALM}:{dev.password}")
            ha2 = _md5(f"{method}:{fields.get('uri', '')}")
            expected = _md5(f"{ha1}:{fields['nonce']}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
            if secrets.compare_digest(expected, fields.get("response", "")):
                return True
        if "response" in fields:
            with dev.lock:
                dev.stats.unauthorized += 1
        nonce = secrets.token_hex(16)
        with dev.lock:
            dev.nonces.add(nonce)
        self._send(
            401,
            f'<?xml version="1.0" encoding="UTF-8"?><userCheck version="2.0" xmlns="{XMLNS}">'
            "<statusValue>401</statusValue><statusString>Unauthorized</statusString></userCheck>",
            headers={"WWW-Authenticate": f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'},
        )
        return False

    # --- ISAPI resources ---------------------------------------------------------
    def _device_info(self, body: bytes) -> None:
        self._send(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?><DeviceInfo version="2.0" xmlns="{XMLNS}">'
            f"<deviceName>{escape(self.device.name)}</deviceName><deviceID>sim-0001</deviceID>"
            "<model>DS-7608NI-SIM</model><serialNumber>DS-SIM0001</serialNumber>"
            "<firmwareVersion>V4.0.0</firmwareVersion><deviceType>NVR</deviceType></DeviceInfo>",
        )

    def _channels(self, body: bytes) -> None:
        items = "".join(
            f"<StreamingChannel><id>{track}</id><channelName>Camera {track // 100:02d}</channelName>"
            "<enabled>true</enabled></StreamingChannel>"
            for track in self.device.catalogue.tracks()
        )
        self._send(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?><StreamingChannelList version="2.0" xmlns="{XMLNS}">'
            f"{items}</StreamingChannelList>",
        )

    def _search(self, body: bytes) -> None:
        try:
            root = _strip_namespaces(ET.fromstring(body))
            search_id = root.findtext("searchID") or ""
            track = int(root.findtext("trackIDList/trackID") or "")
            start = datetime.strptime(root.findtext("timeSpanList/timeSpan/startTime"), ISAPI_TIME)
            end = datetime.strptime(root.findtext("timeSpanList/timeSpan/endTime"), ISAPI_TIME)
            limit = int(root.findtext("maxResults") or 40)
            position = int(root.findtext("searchResultPostion") or 0)
        except (ET.ParseError, TypeError, ValueError):
            return self._status(400, "Invalid XML Content", "badXmlContent")
        with self.device.lock:
            self.device.stats.searches += 1
        found = self.device.catalogue.recordings(track, start, end)
        page = found[position : position + limit]
        status = "NO MATCHES" if not page else ("MORE" if position + limit < len(found) else "OK")
        host = self.headers.get("Host", "127.0.0.1")
        items = "".join(
            f"<searchMatchItem><sourceID>{{0000000000-0000-0000-0000-000000000000}}</sourceID>"
            f"<trackID>{rec.track}</trackID><timeSpan><startTime>{rec.start:{ISAPI_TIME}}</startTime>"
            f"<endTime>{rec.end:{ISAPI_TIME}}</endTime></timeSpan><mediaSegmentDescriptor>"
            f"<contentType>video</contentType><codecType>H.264-BP</codecType>"
            f"<playbackURI>{escape(rec.playback_uri(host))}</playbackURI></mediaSegmentDescriptor>"
            "<metadataMatches><metadataDescriptor>recordType.meta.std-cgi.com/time</metadataDescriptor>"
            "</metadataMatches></searchMatchItem>"
            for rec in page
        )
        self._send(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?><CMSearchResult version="2.0" xmlns="{XMLNS}">'
            f"<searchID>{escape(search_id)}</searchID><responseStatus>true</responseStatus>"
            f"<responseStatusStrg>{status}</responseStatusStrg><numOfMatches>{len(page)}</numOfMatches>"
            f"<matchList>{items}</matchList></CMSearchResult>",
        )

    def _download(self, body: bytes) -> None:
        uri = ""
        if body:
            try:
                uri = _strip_namespaces(ET.fromstring(body)).findtext("playbackURI") or ""
            except ET.ParseError:
                return self._status(400, "Invalid XML Content", "badXmlContent")
        parsed = parse_playback_uri(uri)
        rec = self.device.catalogue.find(*parsed) if parsed else None
        if rec is None:
            return self._status(404, "Invalid Operation", "noRecordFound")
        dev = self.device
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
                mode, delay = dev.faults.drop_mode, dev.faults.delay
        if busy:
            return self._status(503, "Device Busy", "deviceBusy")
        try:
            self._stream(rec, drop_after, mode, delay)
        finally:
            with dev.lock:
                dev.stats.concurrent -= 1

    def _stream(self, rec, drop_after: int | None, mode: str, delay: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(rec.size))
        self.end_headers()
        sent = 0
        for block in rec.chunks():
            if drop_after is not None and sent + len(block) > drop_after:
                self.wfile.write(block[: max(0, drop_after - sent)])
                self.wfile.flush()
                with self.device.lock:
                    self.device.stats.downloads_dropped += 1
                    self.device.stats.bytes_sent += max(0, drop_after - sent)
                _cut(self.connection, mode)
                self.close_connection = True
                return
            self.wfile.write(block)
            sent += len(block)
            with self.device.lock:
                self.device.stats.bytes_sent += len(block)
            if delay:
                time.sleep(delay)
        with self.device.lock:
            self.device.stats.downloads_completed += 1

    def _set_faults(self, body: bytes) -> None:
        try:
            changes = json.loads(body or b"{}")
            refuse_for = float(changes.pop("refuse_for", 0) or 0)
            with self.device.lock:
                for key, value in changes.items():
                    if not hasattr(self.device.faults, key):
                        raise ValueError(f"unknown fault {key!r}")
                    setattr(self.device.faults, key, value)
                if refuse_for:
                    self.device.faults.refuse_until = time.time() + refuse_for
        except ValueError as exc:
            return self._send(400, json.dumps({"error": str(exc)}), "application/json")
        return self._send(200, json.dumps(asdict(self.device.faults)), "application/json")


class Server(ThreadingHTTPServer):
    """Threaded HTTP server that resets connections while the device 'reboots'."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, device: Device):
        handler = type("BoundHandler", (Handler,), {"device": device})
        super().__init__(address, handler)
        self.device = device

    def verify_request(self, request, client_address) -> bool:
        if time.time() < self.device.faults.refuse_until:
            _cut(request, "reset")
            return False
        return True


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


def _strip_namespaces(root: ET.Element) -> ET.Element:
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()
