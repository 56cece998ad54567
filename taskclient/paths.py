"""Every path the worker makes from outside data stays inside its folder.

Task names come from the sheet and file names from NVR answers: both are untrusted.
`confine` is the one check every path goes through: it resolves the path and refuses
anything that lands outside its base. `safe_component` turns a label into one folder
name that is valid on Windows and POSIX alike and keeps Unicode letters (`Entrée`
stays `Entrée`).
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .errors import SetupError

# Names Windows refuses whatever the extension (CON, CON.txt, com1 ...).
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_UNSAFE = re.compile(r"[^\w.-]+")  # \w is Unicode: letters and digits of every script stay
MAX_COMPONENT = 80  # characters
# Bytes of UTF-8: filesystems count a name's 255 in bytes (4 for a letter outside the BMP), and the
# worker adds up to ~40 to a name (a leading dot, `_task<id>_<n>`, `.mp4.part`, `.<pid>.tmp`).
MAX_COMPONENT_BYTES = 200


def confine(base: Path, *parts: str) -> Path:
    """`base/parts...` resolved, or SetupError if it would fall outside `base` (or be `base` itself)."""
    root = base.resolve()
    path = root.joinpath(*parts).resolve()
    if path == root or root not in path.parents:
        raise SetupError(f"refused path {'/'.join(parts)!r}: it would fall outside {root}")
    return path


def safe_component(label: str, fallback: str = "task") -> str:
    """One path component from any text: no separators, controls, reserved names or trailing dots."""
    text = unicodedata.normalize("NFC", label)
    text = _UNSAFE.sub("_", text)
    text = cut_bytes(re.sub(r"_{2,}", "_", text).strip("._-")[:MAX_COMPONENT], MAX_COMPONENT_BYTES).rstrip(".")
    if not text:
        return fallback
    if text.split(".")[0].strip().upper() in _RESERVED:
        text = f"_{text}"
    return text


def cut_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def task_folder(downloads: Path, task: dict) -> Path:
    """`<downloads>/<id>-<readable name>`, always directly inside `downloads`."""
    label = task.get("name") or f"{task['server']}-{'_'.join(task.get('cameras') or ['all'])}"
    folder = confine(downloads, f"{int(task['id']):06d}-{safe_component(str(label))}")
    if folder.parent != downloads.resolve():
        raise SetupError(f"task folder {folder} would fall outside {downloads}")
    return folder
