"""The simulator's switches (how the device misbehaves) and its counters (what it saw).

Every field of `Faults` can be set at start (`nvrsim --help`) and changed at run time
with `POST /sim/faults` (a JSON object of fields); `GET /sim/stats` returns `Stats`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

AREAS = ("info", "time", "channels", "search", "download")
CHANNEL_LISTS = ("streaming", "proxy", "inputs")


@dataclass
class Faults:
    """Switches that make the device behave like real firmware on a bad day; all off by default."""

    # downloads
    busy_above: int | None = None  # answer 503 when more downloads than this run at once
    drop_after: int | None = None  # cut a download after this many body bytes
    drop_count: int = -1  # how many downloads to cut (-1: all of them)
    drop_skip: int = 0  # let this many downloads through before cutting any
    drop_mode: str = "close"  # "close" (clean FIN) or "reset" (RST)
    framing: str = "length"  # "length" (Content-Length), "chunked", or "close" (no length: ends at close)
    chunk_end: bool = True  # chunked: send the terminating zero chunk
    no_size: bool = False  # playback URIs without size=
    download_error: int | None = None  # answer downloads with this HTTP status and an error document
    body: str | None = None  # answer every video download with this text instead (a playlist, a manifest ...)
    # the device as a whole
    refuse_until: float = 0.0  # reset every connection until this time (a reboot)
    refuse_next: int = 0  # reset the next this many connections (a reboot as its first clients see it)
    delay: float = 0.0  # seconds to pause per block sent (a slow link)
    stall: bool = False  # accept requests and never answer (a hung device)
    drip: float = 0.0  # send ISAPI XML answers one byte every this many seconds (alive, but never done)
    xml_busy: list[str] = field(default_factory=list)  # areas answering statusCode 2 deviceBusy (HTTP 200)
    error_text: str | None = None  # statusString of every error answer (e.g. with newlines: log forging)
    redirect_to: str | None = None  # answer every ISAPI request with a 302 to this URL + path
    xxe: str | None = None  # search answers an error whose statusString is an external entity (this URL)
    lock_after: int | None = None  # lock logins after K failed ones ...
    lock_for: float = 1800.0  # ... for this many seconds (even the right password is refused meanwhile)
    # methods and lists that some firmware refuses with "Invalid Operation"
    search_methods: list[str] = field(default_factory=lambda: ["GET", "POST"])
    download_methods: list[str] = field(default_factory=lambda: ["GET", "POST"])
    refuse_lists: list[str] = field(default_factory=list)  # of "streaming", "proxy", "inputs"
    # the search
    page_cap: int | None = None  # at most K items a page, "MORE" whenever a page is full
    position_field: str = "both"  # which spelling is honoured: both, searchResultPosition, searchResultPostion
    total_matches: bool = False  # give totalMatches in each answer
    ignore_track: bool = False  # answer every track's recordings whatever trackIDList says
    clip: bool = False  # clip border items' timeSpan to the query (the playback URI keeps the recording's own)
    endless_more: bool = False  # always a full page of new items and "MORE"
    hostile: dict = field(default_factory=dict)  # replace search item values: startTime, endTime, trackID,
    #                                              playbackURI, contentType, name and size (the URI's)
    silent: list[int] = field(default_factory=list)  # channels that recorded nothing (a camera offline)
    no_pictures: bool = False  # picture tracks (x03): search and download answer notSupport
    no_record_types: bool = False  # a search with record types in its metadataList answers notSupport
    # the channels
    names: dict = field(default_factory=dict)  # channel number (as text) -> name on every channel list
    # the clock
    clock_offset: float = 0.0  # the device clock runs this many seconds ahead of the real time
    zone: str = "CST+0:00:00"  # POSIX TZ the device reports (read the way the C library reads it)
    time_mode: str = "NTP"


@dataclass
class Stats:
    """What the device saw, for assertions in tests."""

    downloads_started: int = 0
    downloads_completed: int = 0
    downloads_dropped: int = 0
    busy_answers: int = 0
    unauthorized: int = 0  # failed logins (a wrong digest response)
    locked_answers: int = 0  # requests refused while locked
    concurrent: int = 0
    max_concurrent: int = 0
    bytes_sent: int = 0
    searches: int = 0
    requests: int = 0
    redirects: int = 0
