"""The coordinator's HTTP server: waitress, made to outlast floods of connections.

What a flood needs no token for, and what stops it:

- **Descriptors past 1024.** waitress's default `select()` raises once a socket's
  descriptor passes FD_SETSIZE (1024), which ended the process at about 950 idle
  connections. `poll()` has no such limit.
- **Running out of open files.** The process's soft RLIMIT_NOFILE is raised to what
  `--connections` needs; if the hard limit is lower, the coordinator refuses to
  start and says so, rather than fail at the first flood.
- **The connection limit.** Beyond `--connections`, waitress stops accepting: new
  connections wait in the kernel's backlog (deferred, not refused) until one closes.
  Connections already open, such as each worker's keep-alive session, carry on.
- **Idle and slow sockets holding every slot.** A connection must send a complete
  request head within `--header-timeout` seconds of connecting or of starting a
  request (slowloris sends headers a byte at a time). After a complete request
  it may idle up to `IDLE_SECONDS`, as workers do between polls. The sweep runs
  every few seconds.
- **Bodies.** When the coordinator has a token, a request body is read only
  when the request carries a token: any other request with a body is answered
  401 from its headers alone. With the token, at most `--max-body` bytes are
  read; larger bodies are answered 413 without reading them.
"""
from __future__ import annotations

import hmac
import json
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.utilities import Error

from .config import Config
from .errors import ConfigError

IDLE_SECONDS = 120  # a keep-alive connection's silence between requests (workers poll every few seconds)
MAX_HEADER_BYTES = 32 * 1024  # a request line and headers; the API's are well under 2 KB
SPARE_FILES = 200  # database files, the log, pipes, threads' sockets to PostgreSQL


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (413 body too large, 431 head too large, 400 malformed) in JSON, as the app's."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"error": error.reason, "message": str(error.body)}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class MissingToken(Error):
    """A request with a body but without the coordinator's token: refused before its body is read."""

    code = 401
    reason = "Unauthorized"


class TokenFirstParser(HTTPRequestParser):
    """Reads a request's body only if its headers carry one of the coordinator's tokens (when it has any)."""

    tokens: tuple[bytes, ...] = ()  # the token and the read token

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if self.tokens and (self.chunked or self.content_length > 0) and not self._carries_token():
            self.error = MissingToken("missing or wrong bearer token (Authorization: Bearer <token>);"
                                      " a request body is read only with the token")
            self.completed = True
            self.content_length = 0  # so that the size check after this does not answer 413 instead

    def _carries_token(self) -> bool:
        given = self.headers.get("AUTHORIZATION", "")  # as the app reads it: "Bearer <token>"
        given = given[7:].strip().encode("latin-1", "replace") if given.startswith("Bearer ") else b""
        return any(hmac.compare_digest(given, token) for token in self.tokens)


class GuardedChannel(HTTPChannel):
    """A connection that must send each request head within the server's header timeout."""

    error_task_class = JsonErrorTask
    parser_class = TokenFirstParser
    spoke = False  # has sent at least one byte
    head_began: float | None = None  # when the request head now arriving began; None when none is pending

    def received(self, data: bytes) -> bool:
        began = self.head_began or time.time()
        self.spoke = self.spoke or bool(data)
        done = super().received(data)
        pending = self.request is not None and not self.request.headers_finished
        self.head_began = began if pending else None
        return done


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server whose sweep also closes connections that are slow to say what they want."""

    channel_class = GuardedChannel
    header_timeout = 15.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = now - self.header_timeout
        for channel in list(self.active_channels.values()):
            if channel.requests:
                continue  # a request is being served
            began = channel.head_began if channel.spoke else channel.creation_time
            if began is not None and began < cutoff:
                channel.will_close = True


def make_server(app, config: Config):
    """A waitress server for the app, listening on the configured address (not yet serving)."""
    threads = config.threads + config.streams  # event streams each hold a thread: they get their own
    raise_open_files(config.connections + threads + config.db_pool + SPARE_FILES, config.connections)
    adj = Adjustments(
        host=config.host, port=config.port, threads=threads, ident="taskserver",
        connection_limit=config.connections, channel_timeout=IDLE_SECONDS, asyncore_use_poll=True,
        cleanup_interval=max(1, min(30, int(config.header_timeout / 3))),
        max_request_body_size=config.max_body, max_request_header_size=MAX_HEADER_BYTES,
        channel_request_lookahead=1,  # a connection closed while its request runs is seen (held claims)
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    servers = []
    tokens = tuple(t.encode() for t in (config.token, config.read_token) if t)
    parser = type("Parser", (TokenFirstParser,), {"tokens": tokens})
    channel = type("Channel", (GuardedChannel,), {"parser_class": parser})
    for sockinfo in adj.listen:
        server = GuardedServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
        server.header_timeout, server.channel_class = config.header_timeout, channel
        servers.append(server)
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    multi = MultiSocketServer(socket_map, adj, listening, dispatcher, servers[0].log_info)
    multi.effective_port = servers[0].effective_port
    return multi


def raise_open_files(needed: int, connections: int) -> None:
    """Let the process open `needed` files, or refuse to start with what to change."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigError(f"--connections {connections} needs about {needed} open files, but this process may"
                              f" open at most {hard} (ulimit -Hn): raise the limit or lower --connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
