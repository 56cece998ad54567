"""Log lines that untrusted text cannot forge.

Errors from NVRs, worker names, paths and headers reach the coordinator's log.
A newline in one of them would write a line that looks like the coordinator's
own. Every record of the coordinator's loggers (and waitress's) passes through
one filter that shows control characters as escapes (\\n, \\x1b, \\u2028), so
each record stays one line. Tracebacks are formatted separately and stay as
they are.
"""
from __future__ import annotations

import logging
import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
LOGGERS = ("taskserver", "waitress", "waitress.queue")


def escape(text: str) -> str:
    """`text` on one line: control, line-separator and bidi-override characters as escapes."""
    return CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match) -> str:
    char = match.group()
    if char in NAMED:
        return NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class EscapeControls(logging.Filter):
    """Formats a record's message once, escaped; its arguments are then spent."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as it always does
            return True
        escaped = escape(message)
        if escaped != message or record.args:
            record.msg, record.args = escaped, None
        return True


def install() -> None:
    """Escape every record of the coordinator's loggers; installing twice adds nothing."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, EscapeControls) for f in logger.filters):
            logger.addFilter(EscapeControls())
