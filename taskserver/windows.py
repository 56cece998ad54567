"""Relative time windows and schedules: "yesterday", "last 6h", "daily 01:00", "every 6h".

Times here are NVR-local wall-clock times (what the NVR's own display shows),
computed from the coordinator's clock in the row's zone: the sheet's `timezone`
column, else `--timezone`, else the coordinator machine's own zone. A scheduled
row's runs cover back-to-back windows, each ending on a period boundary (local
midnight for `daily`, every N hours from local midnight for `every Nh`), so that
runs never leave a gap and never overlap, however late a run fires.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

RELATIVE = re.compile(r"^\s*(?:(yesterday|today)|last\s+(\d+)\s*([mhd]))\s*$", re.IGNORECASE)
CADENCE = re.compile(r"^\s*(?:(daily)(?:\s+(?:at\s+)?(\d{1,2}):(\d{2}))?|(hourly)|every\s+(\d+)\s*([mhd]))\s*$",
                     re.IGNORECASE)
UNIT = {"m": 60, "h": 3600, "d": 86400}
ANCHOR = datetime(1970, 1, 1)  # periods count from a local midnight
LATEST_FIRE_LAG = 600.0  # a period's run starts this long after its end (at most), so its last recording is closed


def local_zone() -> tzinfo:
    """The coordinator machine's own zone, for rows that name none."""
    return datetime.now().astimezone().tzinfo


def relative_window(text: str, now: float, zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The NVR-local [start, end) that `yesterday`, `today` or `last N(m|h|d)` means now; None if it is not one."""
    match = RELATIVE.match(str(text))
    if match is None:
        return None
    here = datetime.fromtimestamp(now, zone).replace(tzinfo=None, microsecond=0)
    midnight = here.replace(hour=0, minute=0, second=0)
    if match.group(1):
        if match.group(1).lower() == "yesterday":
            return midnight - timedelta(days=1), midnight
        return midnight, here
    length = timedelta(seconds=int(match.group(2)) * UNIT[match.group(3).lower()])
    if length <= timedelta(0):
        raise ValueError(f"{text!r}: the window must be longer than nothing")
    return here - length, here


@dataclass(frozen=True)
class Cadence:
    """How often a scheduled row runs: its period, and when in the period its run starts."""

    text: str
    period: int  # seconds; a day for `daily`
    fire_after: int  # seconds after a period's end that its run starts

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=self.period)

    def boundary(self, moment: datetime) -> datetime:
        """The latest period boundary at or before NVR-local `moment` (boundaries fall on local midnights)."""
        return ANCHOR + timedelta(seconds=(moment - ANCHOR).total_seconds() // self.period * self.period)

    def due_end(self, local_now: datetime) -> datetime:
        """The end of the latest period whose run is due at NVR-local `local_now`."""
        return self.boundary(local_now - timedelta(seconds=self.fire_after))

    def fire_time(self, window_end: datetime) -> datetime:
        """NVR-local time at which the run of the period ending at `window_end` is due."""
        return window_end + timedelta(seconds=self.fire_after)


def parse_cadence(text: str) -> Cadence:
    """`daily`, `daily 01:00`, `hourly`, `every 6h`, `every 30m`, `every 2d`; ValueError with the forms otherwise."""
    match = CADENCE.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a schedule (use e.g. daily 01:00, every 6h, hourly)")
    if match.group(1):
        hour, minute = int(match.group(2) or 1), int(match.group(3) or 0)
        if hour > 23 or minute > 59:
            raise ValueError(f"{text!r}: {hour}:{minute:02d} is not a time of day")
        return Cadence(str(text).strip(), 86400, hour * 3600 + minute * 60)
    if match.group(4):
        return Cadence(str(text).strip(), 3600, 300)
    period = int(match.group(5)) * UNIT[match.group(6).lower()]
    if period < 300:
        raise ValueError(f"{text!r}: a schedule runs at most every 5 minutes")
    if period < 86400 and 86400 % period:
        raise ValueError(f"{text!r}: the period must divide a day (e.g. 1h, 2h, 3h, 4h, 6h, 8h, 12h, 30m)")
    if period > 86400 and period % 86400:
        raise ValueError(f"{text!r}: periods longer than a day are whole days (e.g. 2d, 7d)")
    return Cadence(str(text).strip(), period, int(min(LATEST_FIRE_LAG, period / 6)))


def zone_named(name: str | None) -> tzinfo:
    """A row's zone by IANA name, or the coordinator's own zone."""
    return ZoneInfo(name) if name and name != "auto" else local_zone()
