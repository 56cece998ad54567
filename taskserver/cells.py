"""Cell parsers: one value from a sheet, CSV or API cell in, a checked value out.

Every parser returns None for a blank cell and raises ValueError with a message
a person can act on. Cells come from people's spreadsheets and from anyone who
can reach the API, so every text is bounded, stripped and free of control
characters before it is looked at, and no number is trusted to be small.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The longest text each field accepts (characters, after stripping surrounding spaces).
TEXT_LIMITS = {
    "server": 255, "username": 64, "password": 128, "name": 200, "id": 128, "cameras": 4000,
    "starttime": 64, "endtime": 64, "priority": 32, "chunk": 32, "max_parallel": 32, "timezone": 64,
    "tls_fingerprint": 128, "schedule": 64, "window": 16, "content": 16, "record_type": 100,
}
WINDOWS = ("whole", "device", "exact")  # whole stored files; the device's cut of the window; trimmed exactly
CONTENTS = {"video": "video", "videos": "video", "pictures": "pictures", "picture": "pictures", "photos": "pictures",
            "both": "both"}
RECORD_TYPES = ("continuous", "motion", "alarm", "manual", "event")
PRIORITY_RANGE = (-1_000_000, 1_000_000)
MAX_PARALLEL_RANGE = (1, 1000)
YEAR_RANGE = (1970, 2100)  # recordings outside these years are a typo, and far dates overflow time zone arithmetic
CHUNK_RANGE = (timedelta(minutes=1), timedelta(days=3660))
# Hikvision track ids are channel × 100 + stream: 101 is channel 1's main stream, 102 its sub-stream,
# 103 the third stream; IP channels may start at 33 (3301). So a track id has at most five digits.
MAX_CHANNEL = 999
STREAMS = (1, 2, 3)
MAX_EXACT_NUMBER = 10**15  # a spreadsheet stores numbers as doubles: beyond this their digits are not exact
AUTO = "auto"  # timezone: the NVR's own zone, read from the device when the task runs

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SERVER = re.compile(r"^(?:(https?)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?/?$")
TRACK_SEPARATORS = re.compile(r"[,;/\s]+")
DATE_FORMATS = ("2026-03-01 08:00 (year-month-day), 01.03.2026 08:00 (day.month.year), 13/03/2026 08:00"
                " (with / only when the day or the month is above 12), or a date cell")
LOCALE_HINT = ("(a language setting of the spreadsheet). Format the cameras column as text before typing, or"
               " separate tracks with ';' or '/' (101;201)")


class Cell:
    """A value with its spreadsheet type: "s" text, "n" number, "d" date, "b" boolean, "f" formula."""

    __slots__ = ("value", "data_type")

    def __init__(self, value, data_type: str = "s"):
        self.value, self.data_type = value, data_type


def clean(field: str, cell):
    """The cell's value ready for its parser: text stripped, bounded and free of control characters.

    Formula cells are refused: openpyxl does not compute them, and a formula text
    would come back to life in the report. A password is never shown, so a
    password typed as text may begin with '='.
    """
    value = cell.value
    if cell.data_type == "f":
        raise ValueError(f"formula cells are not read ({_formula(value)}); paste the values instead")
    if not isinstance(value, str):
        return value
    text = value.strip()
    limit = TEXT_LIMITS.get(field, 256)
    if len(text) > limit:
        raise ValueError(f"{len(text):,} characters; at most {limit} are accepted here")
    bad = CONTROL.search(text)
    if bad:
        raise ValueError(f"contains a control character (U+{ord(bad.group()):04X}) at position {bad.start() + 1};"
                         " retype the cell as one line of plain text")
    if text.startswith("=") and field != "password":
        raise ValueError(f"formula cells are not read ({_formula(text)}); paste the values instead")
    return text


def _formula(value) -> str:
    formula = CONTROL.sub("?", str(value))
    return formula if len(formula) <= 60 else formula[:57] + "..."


def shown(value) -> str:
    """A value for a message: short, and never a huge number spelled out."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"{float(value):.3g}" if abs(value) < 10**300 else "a number of more than 300 digits"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10**18:
        return f"{value:.3g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(value, secret: bool = False) -> str | None:
    """Text cell; whole numbers are accepted (a password 12345 typed into a cell becomes a number)."""
    if blank(value):
        return None
    if isinstance(value, bool):
        raise ValueError("expected text, found TRUE/FALSE")
    if isinstance(value, (datetime, date)):
        raise ValueError("expected text, found a date" + ("" if secret else f" ({value})"))
    if isinstance(value, (int, float)):
        return str(_whole_number(value, "text", secret))
    if not isinstance(value, str):
        raise ValueError(f"expected text, found {type(value).__name__}")
    return value


def _whole_number(value: int | float, what: str, secret: bool = False) -> int:
    """A number cell standing for text: only whole numbers small enough to be exact."""
    label = "the number" if secret else shown(value)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"the cell holds {label}, not {what}: format the column as text and retype it")
    if abs(value) >= MAX_EXACT_NUMBER:
        raise ValueError(f"the cell holds {label}, too many digits to be exact: format the column as text and"
                         " retype it")
    return int(value)


def server(value) -> str | None:
    """`host`, `host:port` or `https://host:port`, stored lower-case; plain http drops its scheme."""
    raw = text(value)
    if raw is None:
        return None
    m = SERVER.match(raw)
    if not m or (m.group(4) and not 0 < int(m.group(4)) < 65536):
        raise ValueError(f"{shown(raw)} is not host[:port] (e.g. 192.168.1.64 or nvr.example.com:8000)")
    scheme, host, port = m.group(1) or "http", m.group(2).lower(), m.group(4)
    address = f"{host}:{port}" if port else host
    return address if scheme == "http" else f"https://{address}"


def is_track(number: int) -> bool:
    """Whether a number can be a Hikvision track id: channel × 100 + stream."""
    return 1 <= number // 100 <= MAX_CHANNEL and number % 100 in STREAMS


def cameras(value) -> tuple[str, ...] | None:
    """Track ids: a text list separated by commas, semicolons, slashes or spaces, or one number cell.

    A number cell that cannot be one track id is a list the spreadsheet mangled:
    101,201 became 101.201 where the comma is the decimal sign, 101 201 became
    101201 where a space separates thousands. Both are refused with the cause.
    """
    if blank(value):
        return None
    if isinstance(value, bool) or isinstance(value, (datetime, date)):
        raise ValueError(f"expected track ids such as 101,201, found {shown(value)}")
    if isinstance(value, float) and not value.is_integer():
        if not math.isfinite(value):
            raise ValueError(f"{shown(value)} is not a track id")
        raise ValueError(f"the cell holds the number {value:g}, not a list of tracks: the spreadsheet took the comma"
                         f" or dot between tracks for a decimal sign {LOCALE_HINT}")
    if isinstance(value, (int, float)):
        number = int(value) if abs(value) < MAX_EXACT_NUMBER else None
        if number is not None and is_track(number):
            return (str(number),)
        if number is None or number > MAX_CHANNEL * 100 + max(STREAMS):
            raise ValueError(f"the cell holds the number {shown(value) if number is None else number}, more digits"
                             " than a track id (channel × 100 + stream, at most 5 digits): the spreadsheet took the"
                             f" space, dot or comma between tracks for a thousands separator {LOCALE_HINT}")
        raise ValueError(f"camera {number} is not a track id (channel × 100 + stream 1-3: 101 is channel 1's main"
                         " stream, 102 its sub-stream)")
    raw = text(value)
    tracks = []
    for part in TRACK_SEPARATORS.split(raw):
        if not part:
            continue
        if not re.fullmatch(r"[0-9]{1,6}", part) or not is_track(int(part)):
            hint = "; separate tracks with ';' or '/' (101;201)" if re.fullmatch(r"[0-9.]+", part) else ""
            raise ValueError(f"camera {shown(part)} is not a track id (channel × 100 + stream 1-3: 101 is channel"
                             f" 1's main stream, 102 its sub-stream; empty for all cameras){hint}")
        tracks.append(str(int(part)))
    if not tracks:
        raise ValueError(f"{shown(raw)} holds no track id (leave the cell empty for every camera)")
    return tuple(dict.fromkeys(tracks))


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_TIME = r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?"
_YEAR_FIRST = re.compile(r"(\d{4})([-./])(\d{1,2})\2(\d{1,2})" + _TIME)
_YEAR_LAST = re.compile(r"(\d{1,2})([-./])(\d{1,2})\2(\d{4})" + _TIME)


def date_time(value) -> datetime | None:
    """A date-time: a date cell, ISO text (with an optional offset), or a date typed the local way.

    Dotted dates are day first everywhere they are used (01.03.2026 is 1 March).
    Slashed and dashed ones are day first in Europe and month first in the US, so
    they are accepted only when no other reading exists: never day-for-month.
    """
    if blank(value):
        return None
    if isinstance(value, bool):
        raise ValueError("expected a date-time, found TRUE/FALSE")
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)):
        raise ValueError(f"{shown(value)} is a number, not a date-time: format the cell as a date")
    else:
        parsed = _time_text(str(value))
    if not YEAR_RANGE[0] <= parsed.year <= YEAR_RANGE[1]:
        raise ValueError(f"year {parsed.year} is outside {YEAR_RANGE[0]}-{YEAR_RANGE[1]}")
    return parsed.replace(microsecond=0)  # an offset, if any, is resolved with the row's time zone


def _time_text(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        pass
    m = _YEAR_FIRST.fullmatch(raw)
    if m:
        return _moment(raw, int(m.group(1)), int(m.group(3)), int(m.group(4)), m.groups()[4:])
    m = _YEAR_LAST.fullmatch(raw)
    if not m:
        if raw[:1].isdigit():
            raise ValueError(f"{shown(raw)} is not a date-time in an accepted form: {DATE_FORMATS}")
        raise ValueError(f"{shown(raw)} is not a date-time (use e.g. 2026-01-31 08:00)")
    first, sep, second, year = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    if sep == "." or first > 12 or first == second:
        day, month = first, second
    elif second > 12:
        day, month = second, first
    else:
        clock = "".join(f"{':' if i else ' '}{int(part):02d}" for i, part in enumerate(m.groups()[4:]) if part)
        raise ValueError(f"{shown(raw)} could be {first} {_month(second)} {year} (day first) or {second}"
                         f" {_month(first)} {year} (month first); write it as {year}-{second:02d}-{first:02d}{clock}"
                         f" (year-month-day) or {first:02d}.{second:02d}.{year}{clock} (day.month.year)")
    return _moment(raw, year, month, day, m.groups()[4:])


def _month(number: int) -> str:
    return _MONTHS[number - 1] if 1 <= number <= 12 else f"month {number}"


def _moment(raw: str, year: int, month: int, day: int, clock: tuple) -> datetime:
    hour, minute, second = (int(part) if part else 0 for part in clock)
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise ValueError(f"{shown(raw)} is not a real date-time; accepted forms: {DATE_FORMATS}") from None


def whole(value, bounds: tuple[int, int]) -> int | None:
    """A whole number within `bounds`, from a number cell or text."""
    if blank(value):
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"[+-]?\d{1,16}(?:\.0*)?", value):
            raise ValueError(f"{shown(value)} is not a whole number")
        number = int(value.split(".")[0])
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"{shown(value)} is not a whole number")
        number = value
    else:
        raise ValueError(f"{shown(value)} is not a whole number")
    low, high = bounds
    if not low <= number <= high:
        raise ValueError(f"{shown(value)} is outside {low:,} to {high:,}")
    return int(number)


def priority(value) -> int | None:
    return whole(value, PRIORITY_RANGE)


def max_parallel(value) -> int | None:
    return whole(value, MAX_PARALLEL_RANGE)


def chunk(value) -> timedelta | None:
    """A chunk length: 30m, 1h, 1.5h, 1d."""
    if blank(value):
        return None
    m = re.fullmatch(r"\s*(\d{1,6}(?:\.\d{1,3})?)\s*([smhd])\s*", str(value).lower()) if isinstance(value, str) \
        else None
    if not m:
        raise ValueError(f"{shown(value)} is not a chunk length (e.g. 30m, 1h, 1d)")
    length = timedelta(seconds=float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    if length < CHUNK_RANGE[0]:
        raise ValueError(f"chunk {shown(value)} is shorter than a minute")
    if length > CHUNK_RANGE[1]:
        raise ValueError(f"chunk {shown(value)} is longer than {CHUNK_RANGE[1].days} days")
    return length


def zone(value) -> ZoneInfo | str | None:
    """An IANA time zone, or AUTO: the NVR's own zone, read from the device."""
    raw = text(value)
    if raw is None:
        return None
    if raw.lower() == AUTO:
        return AUTO
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{shown(raw)} is not a time zone name (e.g. Europe/Bucharest, UTC, or auto: the"
                         " NVR's own)") from None


def schedule(value):
    """A cadence: `daily 01:00`, `every 6h`, `hourly` (see taskserver.windows)."""
    from .windows import parse_cadence

    raw = text(value)
    return None if raw is None else parse_cadence(raw)


def fingerprint(value) -> str | None:
    """The SHA-256 fingerprint of an NVR's certificate: 64 hex digits, colons and spaces allowed."""
    if blank(value):
        return None
    if not isinstance(value, str):
        raise ValueError("a fingerprint is text: format the column as text")
    digits = re.sub(r"[\s:]", "", re.sub(r"(?i)^sha-?256\s*(?:fingerprint)?\s*[=:]?", "", value)).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ValueError(f"{shown(value)} is not a SHA-256 fingerprint (64 hex digits, as `openssl x509"
                         " -fingerprint -sha256` prints them)")
    return digits


def window(value) -> str | None:
    """What of each recording a row exports: whole, device or exact."""
    raw = text(value)
    if raw is None:
        return None
    if raw.lower() not in WINDOWS:
        raise ValueError(f"{shown(raw)} is not a window: whole (stored files whole), device (the NVR cuts at a"
                         " keyframe) or exact (trimmed to the second)")
    return raw.lower()


def content(value) -> str | None:
    """What a row exports: video, pictures or both."""
    raw = text(value)
    if raw is None:
        return None
    if raw.lower() not in CONTENTS:
        raise ValueError(f"{shown(raw)} is not a content: video, pictures or both")
    return CONTENTS[raw.lower()]


def record_type(value) -> str | None:
    """`all`, or the record types to export (motion, alarm, ...), separated by commas."""
    raw = text(value)
    if raw is None:
        return None
    types = [t for t in TRACK_SEPARATORS.split(raw.lower()) if t]
    if types == ["all"]:
        return "all"
    wrong = [t for t in types if t not in RECORD_TYPES]
    if wrong or not types:
        raise ValueError(f"{shown(wrong[0] if wrong else raw)} is not a record type: all, or one or more of"
                         f" {', '.join(RECORD_TYPES)} (e.g. motion,alarm)")
    return ",".join(dict.fromkeys(types))


PARSERS = {"server": server, "cameras": cameras, "starttime": date_time, "endtime": date_time, "priority": priority,
           "chunk": chunk, "max_parallel": max_parallel, "timezone": zone, "tls_fingerprint": fingerprint,
           "schedule": schedule, "window": window, "content": content, "record_type": record_type,
           "password": lambda value: text(value, secret=True)}


def parse(field: str, cell):
    """The field's value from a cell; ValueError with a message naming what is wrong."""
    return PARSERS.get(field, text)(clean(field, cell))
