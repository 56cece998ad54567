"""What a task needs to know about its NVR before searching: its channels and its clock.

Read through hikload's ISAPI vocabulary (`getXML`), over the task's own wire (hikwire).
Answers are untrusted: ids must be digits, names are cleaned, lists are bounded.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hikload import hikvisionapi

from .errors import NotSupported, TaskFailed
from .posixtz import Zone, ZoneError
from .untrusted import clean_text

MAX_CHANNELS = 1024
CLOCK_TTL = 600.0  # seconds a device's clock reading is reused by a worker process
CLOCK_WARN = 60.0  # |device - worker| above this is a warning in the result
_TRACK = re.compile(r"^[1-9]\d{0,3}0[1-3]$")  # channel (1-9999) x 100 + stream 1-3
_ID = re.compile(r"^\d{1,6}$")

# (list path, document, item) in the order they are tried; the first is the one hikload uses.
CHANNEL_LISTS = (
    ("Streaming/channels", "StreamingChannelList", "StreamingChannel"),
    ("ContentMgmt/InputProxy/channels", "InputProxyChannelList", "InputProxyChannel"),
    ("System/Video/inputs/channels", "VideoInputChannelList", "VideoInputChannel"),
)


def children(answer, *keys) -> list:
    """The elements under `keys` of a hikload answer as a list (hikload makes one element a dict)."""
    node = answer
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if node is None or node == {}:
        return []
    return node if isinstance(node, list) else [node]


def text_of(node, key: str) -> str | None:
    """A child's text if it is plain text (a hostile answer may nest elements anywhere)."""
    value = node.get(key) if isinstance(node, dict) else None
    return value.strip() if isinstance(value, str) else None


@dataclass
class Channels:
    """The channels an NVR has, from whichever of its lists it answers."""

    numbers: dict[int, str] = field(default_factory=dict)  # channel number -> name
    tracks: set[str] = field(default_factory=set)  # stream ids listed by Streaming/channels
    lists: list[str] = field(default_factory=list)  # which lists answered

    def has(self, track: str) -> bool:
        """A track NNN exists when its channel NN exists and its stream digit is 1-3 (main, sub, third)."""
        return track in self.tracks or (bool(_TRACK.match(track)) and int(track) // 100 in self.numbers)

    def main_tracks(self) -> list[str]:
        """Each channel's main stream (101, 201, ...), in channel order."""
        return [f"{n}01" for n in sorted(self.numbers)]


def read_channels(server, label: str) -> Channels:
    """The device's channels: Streaming/channels, else the IP (InputProxy) and analog (Video/inputs) lists.

    Some OEM firmware answers "Invalid Operation" to Streaming/channels; a hybrid DVR
    then lists its IP cameras and its analog inputs separately, and both are read.
    """
    found = Channels()
    refused = []
    for path, document, item in CHANNEL_LISTS:
        try:
            answer = hikvisionapi.getXML(server, path)
        except NotSupported as exc:
            refused.append(str(exc))
            continue
        entries = children(answer, document, item)
        if len(entries) > MAX_CHANNELS:
            raise TaskFailed(f"{label}: the channel list {path} has more than {MAX_CHANNELS} entries; refused")
        found.lists.append(path)
        for entry in entries:
            ident = text_of(entry, "id") or ""
            if not _ID.match(ident):
                raise TaskFailed(f"{label}: the channel list {path} holds an unusable id {clean_text(ident, 40)!r}")
            name = clean_text(text_of(entry, "channelName") or text_of(entry, "name") or "", 60)
            number = int(ident)
            if document == "StreamingChannelList":
                found.tracks.add(ident)
                number //= 100
            if number > 0:
                found.numbers.setdefault(number, name)
        if document == "StreamingChannelList":
            break  # it lists every channel, analog and IP alike
    if not found.lists:
        raise NotSupported(f"{label}: no channel list is available ({'; '.join(refused)})")
    return found


def check_tracks(channels: Channels, cameras: list[str], label: str) -> None:
    """Every requested camera must exist on the device: a missing one fails the task for good."""
    missing = [c for c in cameras if not channels.has(c)]
    if missing:
        has = ", ".join(channels.main_tracks()) or "none"
        raise TaskFailed(f"{label} has no camera {', '.join(missing)}; it has {has}", permanent=True)


@dataclass(frozen=True)
class Clock:
    """The device's clock as read once: offset from the worker's clock, its zone, how it keeps time."""

    offset: float | None
    zone: str | None
    mode: str | None
    rule: Zone | None

    def report(self) -> dict:
        """The result's `device` entry."""
        return {"clock_offset": None if self.offset is None else round(self.offset),
                "zone": self.zone, "time_mode": self.mode}


_clocks: dict[str, tuple[float, Clock]] = {}
_clocks_lock = threading.Lock()


def read_clock(server, key: str, label: str, now=time.time, monotonic=time.monotonic) -> Clock:
    """`/ISAPI/System/time`, read at most once per CLOCK_TTL per NVR by this worker process."""
    with _clocks_lock:
        cached = _clocks.get(key)
        if cached and monotonic() - cached[0] < CLOCK_TTL:
            return cached[1]
    before = now()
    try:
        answer = hikvisionapi.getXML(server, "System/time")
    except NotSupported:
        answer = {}  # firmware without System/time: the clock stays unknown
    after = now()
    node = answer.get("Time") if isinstance(answer, dict) else None
    zone_text = clean_text(text_of(node, "timeZone") or "", 100) or None
    mode = clean_text(text_of(node, "timeMode") or "", 20) or None
    try:
        rule = Zone.parse(zone_text) if zone_text else None
    except ZoneError:
        rule = None
    offset = _offset(text_of(node, "localTime"), rule, (before + after) / 2)
    clock = Clock(offset, zone_text, mode, rule)
    with _clocks_lock:
        _clocks[key] = (monotonic(), clock)
    return clock


def _offset(local: str | None, rule: Zone | None, worker_now: float) -> float | None:
    """Device time minus worker time in seconds, from `localTime` (with its offset, else via the zone)."""
    if not local or len(local) > 40:
        return None
    try:
        moment = datetime.fromisoformat(local.replace("Z", "+00:00") if local.endswith("Z") else local)
    except ValueError:
        return None
    if moment.tzinfo is None:
        if rule is None:
            return None
        # Wall clock to UTC: the zone's offset at (about) that moment.
        guess = moment - timedelta(seconds=rule.std_utc)
        moment = moment.replace(tzinfo=timezone(timedelta(seconds=rule.utc_offset(guess))))
    return moment.timestamp() - worker_now


def clock_warning(clock: Clock, label: str) -> str | None:
    """A short warning when the device's clock is more than a minute off the worker's."""
    if clock.offset is None or abs(clock.offset) <= CLOCK_WARN:
        return None
    way = "ahead of" if clock.offset > 0 else "behind"
    return f"{label} clock is {abs(clock.offset):.0f} s {way} this worker's"
