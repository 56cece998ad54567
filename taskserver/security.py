"""What a browser may ask of the coordinator: the Host it names, the page it comes from, the body it sends.

A coordinator on loopback without a token trusts whoever can connect, but a web
page the operator opens can connect too. Three checks keep such pages out,
with or without a token:

- **Host**: a DNS-rebinding page reaches the coordinator under a name of its own
  (`evil.example` resolved to 127.0.0.1), so the browser sends that name as Host
  and lets the page read the answers. Only IP literals, localhost names, this
  machine's names (when listening beyond loopback) and the configured public
  names are served; a rebinding attack always needs a name of the attacker's.
- **Origin / Sec-Fetch-Site**: a page of another origin may send requests (forms,
  `fetch` in no-cors mode, image tags) without reading the answers. Every call
  that changes state, and every claim (which leases a task), is refused when the
  browser says it comes from another origin.
- **Content-Type**: a request body must be JSON. An HTML form can only send
  form-encoded, multipart or plain text bodies, so it cannot post at all.

Programs (workers, curl, scripts) send neither Origin nor Sec-Fetch-Site and pass.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from .config import Config
from .errors import Forbidden, MisdirectedRequest, TaskServerError, UnsupportedMediaType

log = logging.getLogger("taskserver")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATE_CHANGING_GETS = frozenset({"api.claim"})  # a claim leases a task: it changes state although it is a GET
SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})  # "none": typed into the address bar, a bookmark
OPEN_PATHS = frozenset({"/healthz"})  # a load balancer's probe may use any name; it reveals nothing


def served_names(config: Config) -> frozenset[str]:
    """Host names (besides IP literals and localhost) this coordinator answers to."""
    names = set(config.public_hosts)
    if not config.loopback:  # reachable from other machines: by this machine's own names too
        for name in (socket.gethostname(), socket.getfqdn()):
            names.add(name.lower().rstrip("."))
    return frozenset(n for n in names if n)


def host_name(host: str) -> str:
    """The name part of a Host header or an origin's netloc, lower case, without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(host: str, names: frozenset[str]) -> bool:
    """Whether a Host header names this coordinator: an IP literal, localhost, or a served name."""
    name = host_name(host)
    if name in names or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def same_origin(origin: str, host: str, public: frozenset[str]) -> bool:
    """Whether a browser's Origin is this coordinator's own page: the Host it asked for, or a public name.

    A public name counts only on its scheme's default port (the proxy's): another port of the same
    machine is another site.
    """
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file: pages) and anything odd
    netloc = parts.netloc.lower()
    return netloc == host.strip().lower() or netloc in public


def check_request() -> None:
    """Refuse foreign Host names, cross-origin state changes and claims, and bodies that are not JSON."""
    try:
        _check()
    except TaskServerError as exc:  # the operator should know a page or a client tried
        log.warning("refused %s %s from %s: %s", request.method, request.path[:200], request.remote_addr, exc)
        raise


def _check() -> None:
    names = current_app.extensions["taskserver.served_names"]
    if request.path in OPEN_PATHS:
        return
    host = request.environ.get("HTTP_HOST", "")
    if host and not host_allowed(host, names):
        raise MisdirectedRequest(
            f"this coordinator does not serve the name {host_name(host)[:100]!r}; if it is yours (e.g. behind a"
            " proxy), start the coordinator with --public-host NAME")
    if request.method in SAFE_METHODS and request.endpoint not in STATE_CHANGING_GETS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in SAME_ORIGIN_FETCH:
        raise Forbidden(f"refused a {site[:40]} request from a web page: only the coordinator's own page may do this")
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, host, current_app.config["TASKSERVER"].public_hosts):
        raise Forbidden(f"refused a request from the web page {origin[:100]!r}: only the coordinator's own page"
                        " may do this")
    if request.method not in SAFE_METHODS and _has_body() and request.mimetype != "application/json":
        raise UnsupportedMediaType("a request body must be JSON (Content-Type: application/json)")


def _has_body() -> bool:
    """A body, or at least a declared content type (an empty HTML form still sends one)."""
    return bool(request.content_length or request.headers.get("Transfer-Encoding") or request.content_type)


def no_sniffing(response):
    """A JSON answer stays JSON: a page cannot load /api/claim as a script or a style sheet."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def install(app: Flask, config: Config) -> None:
    """Run the checks before every request of the app."""
    app.extensions["taskserver.served_names"] = served_names(config)
    app.before_request(check_request)
    app.after_request(no_sniffing)
