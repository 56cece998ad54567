"""The recordings of one camera in a range: a search paged by us, every item checked.

hikload's own paging re-searches from the last item's start (so boundary items come
twice), turns a one-item page into a dict, and has neither a page limit nor a
deadline. Here the search is paged by position, with hikload's XML vocabulary:
- the position field is sent in the spelling the device understands
  (`searchResultPostion` as most firmware has it, else `searchResultPosition`); a
  device that ignores it (the next page repeats the first) gets the other spelling;
- `MORE`/`OK`/`NO MATCHES`, short pages, one-item pages and `totalMatches` are read
  as firmware gives them; GET is tried when POST is refused, and back;
- at most MAX_PAGES pages and MAX_ITEMS items per camera, within a deadline checked
  between pages (each request has its own timeout): a device that answers `MORE`
  forever ends the attempt with a clear error and no work left running;
- items of other tracks (firmware that ignores `trackIDList`) and items of another
  content (pictures in a video search) are dropped; a recording is known by its playback URI's `name=` and `starttime=` (else the whole URI),
  so it is listed once however often pages repeat it;
- its start is the playback URI's `starttime=` when given, else the item's timeSpan:
  firmware that clips border items to the query changes the timeSpan, not the URI,
  so every chunk of a row agrees on when a recording starts, and exactly one owns it.
- a record type filter (`motion`, `alarm`...) goes into the search's `metadataList`;
  items that name another type in their `metadataMatches` are dropped, so a device
  that ignores the filter still yields only what was asked. A device that refuses
  the filter (or has no picture track) raises `Unsupported`, for the result's notes;
- a picture (track x03) is fetched by a GET of its playback URI's path, which must
  be a device path (`/ISAPI/Streaming/tracks/...`), never another host.
Times are parsed strictly and track ids must be digits: file names are built only from
these parsed values, never from the device's text.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from html import unescape
from urllib.parse import parse_qsl, urlsplit

from hikload import hikvisionapi

from .device import children, text_of
from .errors import NotSupported, TaskFailed
from .untrusted import clean_text

MAX_PAGES = 200
MAX_ITEMS = 10_000
PAGE_SIZE = 50
MAX_URI = 2048
ALL_TIME = (datetime(2000, 1, 1), datetime(2037, 12, 31, 23, 59, 59))
SPELLINGS = ("searchResultPostion", "searchResultPosition")
_SPAN_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?(?:Z|[+-]\d{2}:?\d{2})?$")
_URI_TIME = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z?$")
_TRACK = re.compile(r"^\d{1,6}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_PICTURE_PATH = re.compile(r"^/ISAPI/Streaming/tracks/\d{1,6}/?$")
# The sheet's record types: what is sent in metadataList, and the type names items may carry.
RECORD_TYPES = {
    "continuous": ("TIMING", {"time", "timing", "cmr", "continuous"}),
    "motion": ("MOTION", {"motion", "vmd", "videomotion"}),
    "alarm": ("ALARM", {"alarm", "alarminput", "io"}),
    "manual": ("MANUAL", {"manual"}),
    "event": ("ALLEVENT", {"motion", "vmd", "videomotion", "alarm", "alarminput", "io", "manual", "allevent",
                           "linedetection", "fielddetection", "intrusion", "vca", "smart"}),
}
CONTENT = {"video": ("video",), "picture": ("picture", "metadata")}  # contentType values of each kind


class Unsupported(TaskFailed):
    """Raised when the device refuses what the row asks (a record type filter, pictures) but searches otherwise."""

# Per worker process: what each device accepted last time (method, spelling), tried first.
_accepted: dict[str, tuple[str, str]] = {}


# A listed size= beyond what a stored file (about 1 GB on Hikvision devices, 4 GiB at most) plus
# 100 Mbit/s over the recording's span could hold is taken as no size at all.
MAX_FILE = 4 * 1024**3
MAX_RATE = 12_500_000  # bytes per second


@dataclass(frozen=True)
class Recording:
    """One recording as listed, from validated values only."""

    track: str
    start: datetime  # device-local, from the URI's starttime= when given
    end: datetime
    uri: str  # the device's playback URI, sent back to it (escaped) to download
    identity: str  # track + name= (or the URI): one recording, however often it is listed
    size: int | None  # the URI's size=, when the firmware gives it
    content: str = "video"  # or "picture" (a moment: start == end), fetched by a GET of its URI

    @property
    def span(self) -> float:
        return (self.end - self.start).total_seconds()


def isapi_time(moment: datetime) -> str:
    """A device-local time the way Hikvision firmware writes it (with its bogus `Z`)."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def parse_span_time(text: str | None) -> datetime:
    """A timeSpan time, strictly: `YYYY-MM-DDTHH:MM:SS` with an optional `Z`/offset (taken as wall clock)."""
    m = _SPAN_TIME.match(text or "")
    if not m:
        raise ValueError(f"bad time {clean_text(text, 40)!r}")
    return datetime(*(int(g) for g in m.groups()))


def parse_item(item, wanted: str, label: str, content: str = "video", kinds: set[str] | None = None
               ) -> Recording | None:
    """A search item as a Recording; None for another track, content or record type; TaskFailed if unusable."""
    media = item.get("mediaSegmentDescriptor") if isinstance(item, dict) else None
    uri = text_of(media, "playbackURI")
    if not isinstance(item, dict) or uri is None:
        raise TaskFailed(f"{label}: a search item has no playback URI; listing is unreliable")
    uri = unescape(uri)
    if len(uri) > MAX_URI or not _PRINTABLE.match(uri):
        raise TaskFailed(f"{label}: a search item's playback URI is unusable ({len(uri)} characters)")
    params = dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True))
    track = text_of(item, "trackID") or _uri_track(uri) or wanted
    if not _TRACK.match(track):
        raise TaskFailed(f"{label}: a search item has an unusable track id {clean_text(track, 40)!r}")
    given = (text_of(media, "contentType") or content).lower()
    if str(int(track)) != str(int(wanted)) or given not in CONTENT[content]:
        return None
    if kinds is not None:
        kind = _kind_of(item)
        if kind is not None and kind not in kinds:
            return None
    span = item.get("timeSpan")
    try:
        span_start, span_end = parse_span_time(text_of(span, "startTime")), parse_span_time(text_of(span, "endTime"))
        start = _uri_time(params.get("starttime")) or span_start
        end = _uri_time(params.get("endtime")) or span_end
    except ValueError as exc:
        raise TaskFailed(f"{label}: a search item of camera {wanted} has an unusable time: {exc}") from None
    if end < start:
        raise TaskFailed(f"{label}: a search item of camera {wanted} ends before it starts")
    if content == "picture" and not _PICTURE_PATH.match(urlsplit(uri).path):
        raise TaskFailed(f"{label}: a picture of camera {wanted} has an unusable URI path"
                         f" {clean_text(urlsplit(uri).path, 60)!r}")
    given = params.get("size") or ""
    size = int(given) if given.isascii() and given.isdigit() and len(given) < 16 else None
    if size is not None and size > MAX_FILE + MAX_RATE * (end - start).total_seconds():
        size = None  # no recording is that big: a hint this wrong must not decide that a host is full
    name = params.get("name")
    # name= names the stored file; with starttime= it names this recording in it, clipped or not.
    identity = f"{wanted}/{name}/{params.get('starttime', '')}" if name else f"{wanted}/{uri}"
    return Recording(wanted, start, end, uri, identity, size, content)


def _kind_of(item) -> str | None:
    """The record type an item names in its metadataMatches (`recordType.meta.std-cgi.com/motion`)."""
    node = item.get("metadataMatches")
    descriptor = text_of(node, "metadataDescriptor") if isinstance(node, dict) else None
    if not descriptor:
        return None
    return descriptor.rstrip("/").rsplit("/", 1)[-1].lower()


def _uri_time(text: str | None) -> datetime | None:
    if not text:
        return None
    m = _URI_TIME.match(text)
    if not m:
        raise ValueError(f"bad playback URI time {clean_text(text, 40)!r}")
    return datetime(*(int(g) for g in m.groups()))


def _uri_track(uri: str) -> str | None:
    m = re.search(r"/tracks/(\d{1,6})/?", urlsplit(uri).path)
    return m.group(1) if m else None


def search(server, key: str, label: str, track: str, start: datetime | None, end: datetime | None,
           budget: float, cancelled=lambda: False, content: str = "video", record_type: str | None = None
           ) -> list[Recording]:
    """Every recording (or picture) of `track` overlapping [start, end), each once, oldest first.

    With `record_type` (a key of RECORD_TYPES), only recordings of that type.
    """
    begin, finish = (start, end) if start is not None else ALL_TIME
    descriptor, kinds = RECORD_TYPES[record_type] if record_type else (None, None)
    deadline = time.monotonic() + budget
    found: dict[str, Recording] = {}
    seen: set[str] = set()
    position = pages = 0
    first_page: list[str] = []
    switched = False
    while True:
        if cancelled():
            return []
        if pages >= MAX_PAGES or len(seen) >= MAX_ITEMS:
            raise TaskFailed(f"{label}: the search of camera {track} still answers MORE after {pages} pages and"
                             f" {len(seen)} recordings; listing stopped (split the row with a chunk)")
        if time.monotonic() > deadline:
            raise TaskFailed(f"{label}: the search of camera {track} took longer than {budget:.0f} s; listing stopped",
                             device="unreachable")
        try:
            answer = _page(server, key, label, track, begin, finish, position, descriptor)
        except _Refused:
            if position != 0:
                raise
            if descriptor:
                try:
                    _page(server, key, label, track, begin, finish, 0, None)  # does a plain search work?
                except _Refused:
                    if content != "picture":
                        raise
                else:
                    raise Unsupported(f"{label} cannot search by record type (the filter {record_type} is"
                                      " refused)") from None
            if content == "picture":
                raise Unsupported(f"{label} has no pictures for camera {track} (its search is refused)") from None
            raise
        result = answer.get("CMSearchResult") if isinstance(answer, dict) else None
        if not isinstance(result, dict):
            raise TaskFailed(f"{label}: unexpected answer to the search of camera {track}; listing is unreliable")
        status = (text_of(result, "responseStatusStrg") or "").upper()
        items = children(result, "matchList", "searchMatchItem")
        pages += 1
        identities = []
        for item in items:
            rec = parse_item(item, track, label, content, kinds)
            identity = rec.identity if rec else _raw_identity(item)
            identities.append(identity)
            if rec is not None and rec.identity not in found:
                found[rec.identity] = rec
        new = [i for i in identities if i not in seen]
        seen.update(identities)
        if pages == 1:
            first_page = identities
        if status != "MORE" or not items:
            if status == "MORE":
                raise TaskFailed(f"{label}: the search of camera {track} answered MORE with an empty page")
            break
        if not new:
            if identities[:1] == first_page[:1] and not switched:  # the device ignored our position field
                switched = True
                _prefer_other_spelling(key)
                continue
            raise TaskFailed(f"{label}: the search of camera {track} keeps answering MORE with recordings already"
                             " listed; its paging is not understood")
        position += len(items)
        total = text_of(result, "totalMatches")
        if total and total.isascii() and total.isdigit() and position >= int(total):
            break
    return sorted(found.values(), key=lambda r: (r.start, r.identity))


def _raw_identity(item) -> str:
    media = item.get("mediaSegmentDescriptor") if isinstance(item, dict) else None
    return f"other/{text_of(media, 'playbackURI')}"


class _Refused(TaskFailed):
    """Raised when the device refuses a search with every method and spelling."""


def _page(server, key: str, label: str, track: str, begin: datetime, finish: datetime, position: int,
          descriptor: str | None = None) -> dict:
    """One page of the search, by whichever method and position spelling the device accepts."""
    preferred = _accepted.get(key, ("POST", SPELLINGS[0]))
    methods = [preferred[0]] + [m for m in ("POST", "GET") if m != preferred[0]]
    spellings = [preferred[1]] + [s for s in SPELLINGS if s != preferred[1]]
    refused = None
    for spelling in spellings:
        for method in methods:
            description = _description(track, begin, finish, position, spelling, descriptor)
            try:
                if method == "POST":
                    answer = hikvisionapi.postXML(server, "ContentMgmt/search", data=description)
                else:
                    answer = hikvisionapi.getXML(server, "ContentMgmt/search", data=description)
            except NotSupported as exc:
                refused = exc
                continue
            _accepted[key] = (method, spelling)
            return answer
    raise _Refused(f"{label}: the device refuses the search of camera {track} with GET and POST ({refused})",
                   permanent=True)


def _prefer_other_spelling(key: str) -> None:
    method, spelling = _accepted.get(key, ("POST", SPELLINGS[0]))
    _accepted[key] = (method, SPELLINGS[1] if spelling == SPELLINGS[0] else SPELLINGS[0])


def _description(track: str, begin: datetime, finish: datetime, position: int, spelling: str,
                 descriptor: str | None = None) -> dict:
    """A CMSearchDescription in hikload's dict form (as its getPastRecordingsForID builds one).

    A record type filter is a `metadataList` naming it (`//recordType.meta.std-cgi.com/MOTION`).
    """
    metadata = (f"<metadataList><metadataDescriptor>//recordType.meta.std-cgi.com/{descriptor}"
                "</metadataDescriptor></metadataList>") if descriptor else ""
    template = (
        '<CMSearchDescription version="1.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
        "<searchID></searchID><trackIDList><trackID></trackID></trackIDList>"
        "<timeSpanList><timeSpan><startTime></startTime><endTime></endTime></timeSpan></timeSpanList>"
        f"<maxResults>{PAGE_SIZE}</maxResults><{spelling}>0</{spelling}>{metadata}"
        "</CMSearchDescription>"
    ).encode()
    data = hikvisionapi.xml2dict(template)
    description = data["CMSearchDescription"]
    description["searchID"] = str(uuid.uuid4())
    description["trackIDList"]["trackID"] = track
    description["timeSpanList"]["timeSpan"]["startTime"] = isapi_time(begin)
    description["timeSpanList"]["timeSpan"]["endTime"] = isapi_time(finish)
    description[spelling] = str(position)
    return data
