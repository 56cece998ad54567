"""Text that comes from an NVR (error texts, names, reasons) made safe to show and log.

An NVR's answers are untrusted: a statusString with a newline would forge a line in
the coordinator's log, ANSI escapes would rewrite a terminal, and a megabyte of text
would fill the attempt log. Every such text goes through `clean_text` before it
reaches a message, a log line or a result.
"""
from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")


def clean_text(value: object, limit: int = 200) -> str:
    """`value` as one printable line: control and bidi characters become spaces, cut to `limit` characters."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", text[: limit * 4]))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
