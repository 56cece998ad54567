"""POSIX TZ rules as NVRs report them (`/ISAPI/System/time` `timeZone`), and UTC -> device-local conversion.

Format: `std offset [dst [offset] [,start[/time],end[/time]]]`, e.g. `CST-8:00:00` or
`CET-1CEST,M3.5.0,M10.5.0/3`. As in POSIX the offset is what is added to local time
to get UTC, so `CST-8:00:00` is UTC+8. Rules: `Mm.w.d` (month, week 1-5 where 5 is
the last, weekday 0 = Sunday), `Jn` (day 1-365, 29 February never counted), `n`
(day 0-365, leap days counted); `/time` defaults to 02:00:00 and may be negative or
above 24 h. Hikvision writes the DST part as the amount saved, e.g.
`CST-2:00:00DST01:00:00,M3.5.0/03:00:00,M10.5.0/04:00:00` (UTC+2, one hour more in
summer): a DST part named `DST` is read that way; any other is read as POSIX.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

_NAME = r"(?:<[A-Za-z0-9+-]+>|[A-Za-z]{3,})"
_OFFSET = r"[+-]?\d{1,3}(?::\d{1,2}){0,2}"
_RULE = r"(?:M\d{1,2}\.\d\.\d|J\d{1,3}|\d{1,3})(?:/[+-]?\d{1,3}(?::\d{1,2}){0,2})?"
_TZ = re.compile(rf"^(?P<std>{_NAME})(?P<stdoff>{_OFFSET})"
                 rf"(?:(?P<dst>{_NAME})(?P<dstoff>{_OFFSET})?(?:,(?P<start>{_RULE}),(?P<end>{_RULE}))?)?$")


class ZoneError(ValueError):
    """Raised for a time zone text that is not a POSIX TZ rule."""


def _seconds(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    parts = [int(p) for p in text.lstrip("+-").split(":")] + [0, 0]
    hours, minutes, seconds = parts[:3]
    if minutes > 59 or seconds > 59:
        raise ZoneError(f"bad time {text!r}")
    return sign * (hours * 3600 + minutes * 60 + seconds)


@dataclass(frozen=True)
class Rule:
    """One DST transition rule: which day of a year, and the local time of day (seconds)."""

    kind: str  # "M", "J" or "n"
    a: int
    b: int = 0
    c: int = 0
    time: int = 7200

    @classmethod
    def parse(cls, text: str) -> Rule:
        day, _, at = text.partition("/")
        time = _seconds(at) if at else 7200
        if day.startswith("M"):
            month, week, weekday = (int(x) for x in day[1:].split("."))
            if not (1 <= month <= 12 and 1 <= week <= 5 and 0 <= weekday <= 6):
                raise ZoneError(f"bad rule {text!r}")
            return cls("M", month, week, weekday, time)
        if day.startswith("J"):
            n = int(day[1:])
            if not 1 <= n <= 365:
                raise ZoneError(f"bad rule {text!r}")
            return cls("J", n, time=time)
        n = int(day)
        if not 0 <= n <= 365:
            raise ZoneError(f"bad rule {text!r}")
        return cls("n", n, time=time)

    def day(self, year: int) -> date:
        """The date this rule names in `year`."""
        if self.kind == "M":
            first = date(year, self.a, 1)
            shift = (self.c - (first.weekday() + 1) % 7) % 7  # date.weekday(): Monday 0; POSIX: Sunday 0
            candidate = first + timedelta(days=shift + 7 * (self.b - 1))
            while candidate.month != self.a:  # week 5 means the last such weekday
                candidate -= timedelta(days=7)
            return candidate
        if self.kind == "J":
            leap_shift = 1 if self.a >= 60 and _leap(year) else 0
            return date(year, 1, 1) + timedelta(days=self.a - 1 + leap_shift)
        return date(year, 1, 1) + timedelta(days=self.a)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


@dataclass(frozen=True)
class Zone:
    """A parsed POSIX TZ rule: standard and DST offsets east of UTC (seconds) and the transition rules."""

    text: str
    std_utc: int
    dst_utc: int | None = None
    start: Rule | None = None
    end: Rule | None = None

    @classmethod
    def parse(cls, text: str) -> Zone:
        """Parse a POSIX TZ text (Hikvision's DST form included); ZoneError if it is not one."""
        if not isinstance(text, str) or len(text) > 100:
            raise ZoneError("not a time zone text")
        m = _TZ.match(text.strip())
        if not m:
            raise ZoneError(f"{text!r} is not a POSIX time zone rule")
        std_utc = -_seconds(m["stdoff"])
        if abs(std_utc) > 26 * 3600:
            raise ZoneError(f"{text!r}: offset out of range")
        if not m["dst"]:
            return cls(text, std_utc)
        if m["dstoff"] is None:
            dst_utc = std_utc + 3600
        elif m["dst"] == "DST":  # Hikvision: the DST part is the amount saved
            dst_utc = std_utc + _seconds(m["dstoff"])
        else:
            dst_utc = -_seconds(m["dstoff"])
        start = Rule.parse(m["start"]) if m["start"] else Rule("M", 3, 2, 0)  # POSIX default: US rules
        end = Rule.parse(m["end"]) if m["end"] else Rule("M", 11, 1, 0)
        return cls(text, std_utc, dst_utc, start, end)

    def utc_offset(self, utc: datetime) -> int:
        """Seconds east of UTC in force at the naive UTC instant `utc`."""
        if self.dst_utc is None or self.start is None or self.end is None:
            return self.std_utc
        year = (utc + timedelta(seconds=self.std_utc)).year
        for y in (year - 1, year, year + 1):
            begins = datetime.combine(self.start.day(y), datetime.min.time()) + timedelta(
                seconds=self.start.time - self.std_utc)
            ends = datetime.combine(self.end.day(y), datetime.min.time()) + timedelta(
                seconds=self.end.time - self.dst_utc)
            if begins < ends:
                if begins <= utc < ends:
                    return self.dst_utc
            elif y == year and not (ends <= utc < begins):  # southern hemisphere: DST spans the new year
                return self.dst_utc
        return self.std_utc

    def to_local(self, moment: datetime) -> datetime:
        """An aware datetime as this zone's naive wall-clock time."""
        offset = moment.utcoffset()
        if offset is None:
            raise ValueError("to_local needs a time with a UTC offset")
        naive_utc = moment.replace(tzinfo=None) - offset
        return naive_utc + timedelta(seconds=self.utc_offset(naive_utc))
