"""Where each exported file goes: a folder and file-name template chosen on the worker host.

`--layout` is a path template relative to --downloads, without the extension, e.g.
the default `{nvr}/{camera}_{camera_name}/{date}/{camera_name}_{date}_{start}-{end}`,
which groups files by NVR, then camera, then day, however the rows were chunked.
Fields: {nvr} (the NVR's address), {nvr_label} (the sheet row's name), {camera} (the
track id), {camera_name} (the name the NVR gives the channel), {date}, {start},
{end} (the piece's times, device-local: YYYY-MM-DD, HHMMSS), {row} (the sheet row),
{task} (the task id), {content} (video or picture).
The template is split at `/` first and every part filled and made safe on its own
(`paths.safe_component`), so no value, whatever the sheet, the API or the NVR put in
it, can add a folder level, climb out with `..`, name a device (CON, NUL) or hold a
control character; Unicode letters stay. Every path is checked with `confine` too.
"""
from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from .errors import SetupError
from .paths import MAX_COMPONENT, MAX_COMPONENT_BYTES, confine, cut_bytes, safe_component

DEFAULT = "{nvr}/{camera}_{camera_name}/{date}/{camera_name}_{date}_{start}-{end}"
FIELDS = ("nvr", "nvr_label", "camera", "camera_name", "date", "start", "end", "row", "task", "content")
NAMES = ("nvr", "nvr_label", "camera", "camera_name", "row")  # free text, shortened to fit; the rest are short
MAX_PARTS = 8


@dataclass(frozen=True)
class Layout:
    """A checked template: parts of a relative path, each a format string of known fields."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, template: str | None) -> Layout:
        """Check a --layout template: known fields only, relative, at most MAX_PARTS levels."""
        text = (template or DEFAULT).strip().replace("\\", "/")
        parts = tuple(p for p in text.split("/") if p.strip() not in ("", "."))
        if not parts or len(parts) > MAX_PARTS:
            raise SetupError(f"--layout {template!r}: give 1 to {MAX_PARTS} path levels, e.g. {DEFAULT}")
        for part in parts:
            try:
                names = [name for _, name, spec, conv in string.Formatter().parse(part) if name is not None]
            except ValueError as exc:
                raise SetupError(f"--layout {template!r}: {exc}") from None
            unknown = [n for n in names if n not in FIELDS]
            if unknown:
                raise SetupError(f"--layout {template!r}: unknown field {{{unknown[0]}}}; fields: "
                                 + ", ".join(f"{{{f}}}" for f in FIELDS))
            if any(spec or conv for _, name, spec, conv in string.Formatter().parse(part) if name is not None):
                raise SetupError(f"--layout {template!r}: fields take no format (write {{start}}, not {{start:...}})")
        if not any("{" in p for p in parts[-1:]):
            raise SetupError(f"--layout {template!r}: the file name (last part) needs a field such as {{start}}")
        return cls(parts)

    def stem(self, values: dict[str, str]) -> str:
        """The relative path (POSIX, no extension) for these field values: every level a safe name.

        A level is cut to MAX_COMPONENT characters and MAX_COMPONENT_BYTES bytes; the
        names in it (camera, NVR, row) share what its text and times leave, so that a long
        name is shortened, never the times.
        """
        normal = {f: unicodedata.normalize("NFC", values.get(f) or "") for f in FIELDS}
        filled = []
        for part in self.parts:
            names = [n for _, n, _, _ in string.Formatter().parse(part) if n in NAMES]
            given = dict(normal)
            fixed = part.format(**{f: "" if f in NAMES else given[f] for f in FIELDS})
            used = [given[n] for n in names]
            chars = _shares([len(v) for v in used], MAX_COMPONENT - len(fixed))
            size = _shares([len(v.encode("utf-8")) for v in used], MAX_COMPONENT_BYTES - len(fixed.encode("utf-8")))
            given.update({n: cut_bytes(v[:c], b) for n, v, c, b in zip(names, used, chars, size, strict=True)})
            filled.append(safe_component(part.format(**given), "_"))
        return str(PurePosixPath(*filled))


def _shares(lengths: list[int], budget: int) -> list[int]:
    """How much of `budget` each of several names may keep: short ones whole, the rest an equal share."""
    shares = list(lengths)
    left, waiting = max(budget, 4 * len(lengths)), sorted(range(len(lengths)), key=lengths.__getitem__)
    for done, i in enumerate(waiting):
        shares[i] = min(lengths[i], left // (len(waiting) - done))
        left -= shares[i]
    return shares


def fields(nvr: str, label: str, camera: str, camera_name: str | None, start: datetime, end: datetime,
           row: str, task: int, content: str) -> dict[str, str]:
    """The template's values for one file."""
    return {"nvr": nvr, "nvr_label": label, "camera": camera, "camera_name": camera_name or "",
            "date": f"{start:%Y-%m-%d}", "start": f"{start:%H%M%S}", "end": f"{end:%H%M%S}", "row": row,
            "task": str(task), "content": content}


def place(downloads: Path, stem: str, extension: str) -> Path:
    """The absolute path of `stem` + `extension` inside downloads (refused if it would fall outside)."""
    return confine(downloads, *PurePosixPath(stem + extension).parts)


def prune(downloads: Path, path: Path) -> None:
    """Remove the folders above `path` that are empty now, up to (not including) downloads."""
    root = downloads.resolve()
    folder = path.parent
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
