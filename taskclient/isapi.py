"""The wire to one NVR: every HTTP request a task makes to its device goes through `NVR`.

An NVR's answers are untrusted, so the rules live here, once:
- requests go to the task's own NVR (scheme, host and port from the sheet) and
  nowhere else: a redirect (3xx) is refused as an error, never followed, so no
  other host ever sees a digest login; proxies and ~/.netrc are ignored;
- credentials travel only in digest `Authorization` headers, never in a URL;
- every request has a timeout and every XML answer a size limit and a deadline
  (a watchdog shuts the socket of an answer that drips for too long);
- an XML answer with a DOCTYPE or ENTITY is refused before any parser sees it
  (hikload parses with lxml, which would resolve external entities: XXE);
- HTTP status and ISAPI `ResponseStatus`/`userCheck` answers become clear errors
  before hikload parses anything: 401 is "auth" (with the device's lock-out figures
  when it gives them), 503 or `statusCode 2`/`deviceBusy` is "busy", "Invalid
  Operation" is `NotSupported` (callers fall back), a TLS failure is a
  configuration error that names the certificate problem;
- texts from the device (statusString, names) are cleaned before they reach a message.
"""
from __future__ import annotations

import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from urllib.parse import urlsplit

import requests
import urllib3
from requests.auth import HTTPDigestAuth

from .errors import NotSupported, SetupError, TaskFailed
from .tls import PinnedAdapter, TLSChoice, describe_tls_error, presented_fingerprint, pretty
from .untrusted import clean_text

MAX_XML = 2 * 1024 * 1024  # the largest XML answer accepted (a full search page is ~50 KB)
MAX_ERROR_BODY = 64 * 1024  # what is read of an error answer, to find its statusString
_DOCTYPE = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)


class _BoundedDigest(HTTPDigestAuth):
    """requests' digest auth, reading at most MAX_ERROR_BODY of a 401 answer (requests reads it all)."""

    def handle_401(self, r, **kwargs):
        if r.status_code == 401:
            _preload(r, MAX_ERROR_BODY)
        return super().handle_401(r, **kwargs)


def _preload(response: requests.Response, limit: int) -> bytes:
    """Read at most `limit` bytes of a body into the response; a longer body closes the connection."""
    if not response._content_consumed:
        data = response.raw.read(limit + 1, decode_content=True) or b""
        if len(data) > limit:
            response.raw.close()
            data = data[:limit]
        response._content = data
        response._content_consumed = True
    return response._content or b""


def split_server(server: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a sheet's `server` value: `host`, `host:port` or `https://host:port`."""
    text = server if "://" in server else f"http://{server}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.username or parts.password or parts.query or parts.fragment:
        raise TaskFailed(f"NVR address {clean_text(server)!r} is not host[:port] or https://host[:port]",
                         permanent=True)
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


class NVR:
    """One task's connection to its NVR (see the module docstring for the rules it keeps)."""

    def __init__(self, server: str, username: str, password: str, timeout: float = 30.0,
                 tls: TLSChoice | None = None, task_pin: str | None = None):
        self.scheme, self.host, self.port = split_server(server)
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        self.netloc = netloc if self.port == default and f":{self.port}" not in server else f"{netloc}:{self.port}"
        self.base = f"{self.scheme}://{self.netloc}"
        self.label = f"NVR {self.netloc}"
        self.username = username
        self.timeout = timeout
        self.what: str | None = None  # what the current hikload call is for, in messages
        self.tls = tls or TLSChoice()
        self.pin = self.tls.pin_for(self.host, self.port, task_pin) if self.scheme == "https" else None
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no ~/.netrc credentials, no REQUESTS_CA_BUNDLE
        self.session.auth = _BoundedDigest(username, password)
        self.session.headers["User-Agent"] = "taskclient"
        if self.pin:
            self.session.verify = False  # the pin replaces CA checks: urllib3 compares the fingerprint
            self.session.mount("https://", PinnedAdapter(self.pin))
        elif self.tls.insecure:
            self.session.verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # chosen and documented
        elif self.tls.ca_file:
            self.session.verify = self.tls.ca_file

    @contextmanager
    def doing(self, what: str):
        """Name the hikload calls made inside this block in messages ("search of camera 101")."""
        previous, self.what = self.what, what
        try:
            yield
        finally:
            self.what = previous

    def close(self) -> None:
        """Close the connections to the device."""
        self.session.close()

    # --- requests -----------------------------------------------------------------------
    def xml(self, method: str, path: str, body: str | bytes | None, what: str) -> bytes:
        """An XML answer to one request: checked, bounded, classified; raises on any error answer."""
        started = time.monotonic()
        with self.open(method, path, body, what) as response:
            data = self._read(response, MAX_XML, what, started, 2 * self.timeout)
        refuse_doctype(data, self.label, what)
        check_status(data, self.label, what)
        return data

    @contextmanager
    def open(self, method: str, path: str, body: str | bytes | None, what: str):
        """A streamed answer with HTTP 200 (anything else raises), closed afterwards."""
        if not path.startswith("/ISAPI/"):
            raise SetupError(f"refused request to {path!r}: only ISAPI paths of the task's NVR")
        if isinstance(body, str):
            body = body.encode()  # XML is UTF-8; requests would send a str as Latin-1
        try:
            response = self.session.request(
                method, self.base + path, data=body, stream=True, allow_redirects=False,
                timeout=(self.timeout, self.timeout), headers={"Content-Type": "application/xml"})
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from None
        except (requests.ConnectTimeout, requests.ReadTimeout):
            raise TaskFailed(f"{self.label}: no answer to the {what} request within {self.timeout:.0f} s",
                             device="unreachable") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TaskFailed(f"{self.label} unreachable during {what}: {reason(exc)}", device="unreachable") from None
        except requests.RequestException as exc:
            raise TaskFailed(f"{self.label}: {what} failed: {reason(exc)}") from None
        try:
            if response.status_code != 200:
                data = _preload(response, MAX_ERROR_BODY)
                self._refuse(response, data, what)
            yield response
        finally:
            response.close()

    def _read(self, response: requests.Response, limit: int, what: str, started: float, budget: float) -> bytes:
        """The whole body, at most `limit` bytes within `budget` s: a watchdog shuts a dripping socket."""
        length = response.headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
            raise TaskFailed(f"{self.label}: the answer to {what} is {length[:20]} bytes; more than {limit} refused")
        expired = threading.Event()
        sock = _socket_of(response)

        def cut():
            expired.set()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        watchdog = threading.Timer(max(0.0, started + budget - time.monotonic()), cut)
        watchdog.daemon = True
        watchdog.start()
        data = bytearray()
        try:
            for block in response.iter_content(64 * 1024):
                data += block
                if len(data) > limit:
                    raise TaskFailed(f"{self.label}: the answer to {what} exceeds {limit} bytes; refused")
                if expired.is_set():
                    break
        except requests.RequestException as exc:
            if not expired.is_set():
                raise TaskFailed(f"{self.label}: the answer to {what} was cut: {reason(exc)}",
                                 device="unreachable") from None
        finally:
            watchdog.cancel()
        if expired.is_set():
            raise TaskFailed(f"{self.label}: the answer to {what} took longer than {budget:.0f} s",
                             device="unreachable")
        return bytes(data)

    # --- error answers --------------------------------------------------------------------
    def _refuse(self, response: requests.Response, data: bytes, what: str) -> None:
        code = response.status_code
        if 300 <= code < 400:
            where = clean_text(response.headers.get("Location", "?"), 120)
            raise TaskFailed(f"{self.label} answered the {what} request with a redirect (HTTP {code}) to {where};"
                             " NVR redirects are never followed: check the address, port and http/https",
                             permanent=True)
        if code == 401:
            raise auth_error(self.label, self.username, data)
        fields = status_fields(data) if not _DOCTYPE.search(data) else {}
        check_fields(fields, self.label, what, code)
        raise TaskFailed(f"{self.label}: {what} refused: HTTP {code}{_detail(fields)}")

    def _tls_error(self, exc: Exception) -> TaskFailed:
        problem = describe_tls_error(str(exc))
        seen = presented_fingerprint(self.host, self.port, self.timeout)
        shown = f"; it presents SHA-256 {pretty(seen)}" if seen else ""
        if self.pin:
            advice = f" (pinned: {pretty(self.pin)})"
        else:
            advice = (f". If that is this NVR's own certificate, pin it: --nvr-fingerprint {self.host}:{self.port}=<SHA-256>"
                      " or the sheet's tls_fingerprint column; or trust its CA with --nvr-ca-file")
        return TaskFailed(f"{self.label}: TLS refused: {problem}{shown}{advice}", permanent=True)


def _socket_of(response: requests.Response):
    connection = getattr(response.raw, "_connection", None)
    return getattr(connection, "sock", None)


def refuse_doctype(data: bytes, label: str, what: str) -> None:
    """No DOCTYPE or ENTITY reaches a parser: entity expansion is how XXE and entity bombs work."""
    if _DOCTYPE.search(data):
        raise TaskFailed(f"{label}: the answer to {what} holds a DOCTYPE/ENTITY declaration; refused")


def status_fields(data: bytes) -> dict[str, str]:
    """statusCode, subStatusCode, statusString, lockStatus ... of a ResponseStatus or userCheck answer."""
    wanted = {"statusCode", "subStatusCode", "statusString", "statusValue", "lockStatus", "unlockTime",
              "retryLoginTime"}
    try:
        root = ET.fromstring(data)
    except ET.ParseError:  # not well-formed (e.g. raw control characters): take the fields as text
        found = {tag: m.group(1).decode("utf-8", "replace").strip() for tag in wanted
                 if (m := re.search(rb"<(?:\w+:)?" + tag.encode() + rb">([^<]*)<", data))}
        root_tag = re.search(rb"<(?:\w+:)?(ResponseStatus|userCheck)\b", data)
        return {**found, "root": root_tag.group(1).decode() if root_tag else ""}
    fields = {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        if tag in wanted and tag not in fields and element.text:
            fields[tag] = element.text.strip()
    fields["root"] = root.tag.rsplit("}", 1)[-1] if isinstance(root.tag, str) else ""
    return fields


def check_status(data: bytes, label: str, what: str) -> None:
    """Raise for a 200 answer whose XML says the request failed (statusCode other than 1)."""
    if b"ResponseStatus" not in data and b"userCheck" not in data:
        return
    fields = status_fields(data)
    if fields.get("root") == "userCheck" and fields.get("statusValue", "200") == "401":
        raise auth_error(label, "", data)
    if fields.get("root") == "ResponseStatus" and fields.get("statusCode", "1") != "1":
        check_fields(fields, label, what, 200)
        raise TaskFailed(f"{label}: {what} refused{_detail(fields)}")


def check_fields(fields: dict, label: str, what: str, code: int) -> None:
    """Raise the error an ISAPI status means: busy, not supported; return for anything else."""
    status, sub = fields.get("statusCode", ""), fields.get("subStatusCode", "")
    if code == 503 or status == "2" or sub.lower() == "devicebusy":
        raise TaskFailed(f"{label}: {what}: HTTP {code} (device busy){_detail(fields)}", device="busy")
    invalid = status in ("4", "5", "6") or sub in ("methodNotAllowed", "notSupport", "invalidOperation",
                                                   "badXmlContent", "badXmlFormat")
    if invalid or code in (403, 404, 405, 501):
        raise NotSupported(f"{label}: {what} refused: HTTP {code}{_detail(fields)}", sub=clean_text(sub, 40))


def _small(text: str) -> bool:
    """Up to 9 ASCII digits: a figure int() takes (a device's '²' or 5000 digits would make it raise)."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def auth_error(label: str, username: str, data: bytes) -> TaskFailed:
    """The device refused the login; with its lock-out figures when its userCheck answer has them."""
    fields = status_fields(data) if not _DOCTYPE.search(data) else {}
    user = f" of user {clean_text(username, 60)!r}" if username else ""
    locked = fields.get("lockStatus", "").lower() == "lock"
    unlock = fields.get("unlockTime", "")
    locked_for = int(unlock) if locked and _small(unlock) and 0 < int(unlock) < 10 ** 7 else None
    if locked:
        until = f" for {locked_for} s" if locked_for else ""
        return TaskFailed(f"{label} has locked the login{user}{until} after failed logins (HTTP 401)",
                          device="auth", locked_for=locked_for)
    left = fields.get("retryLoginTime", "")
    note = f"; {int(left)} login attempt(s) left before the device locks it" if _small(left) and int(left) < 1000 else ""
    return TaskFailed(f"{label} refused the password{user} (HTTP 401 Unauthorized){note}", device="auth")


def _detail(fields: dict) -> str:
    text = clean_text(fields.get("statusString", ""), 120)
    sub = clean_text(fields.get("subStatusCode", ""), 40)
    return (f": {text}" if text else "") + (f" ({sub})" if sub and sub.lower() != text.lower() else "")


def reason(exc: Exception) -> str:
    """A short cause for a network error, without the URL or other noise."""
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "timed out", "Name or service not known",
                   "No route to host", "IncompleteRead", "Connection aborted", "Network is unreachable",
                   "Connection broken", "InvalidChunkLength"):
        if marker in text:
            return marker
    return type(exc).__name__
