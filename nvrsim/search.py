"""`/ISAPI/ContentMgmt/search`: the recordings of a track in a range, one page per request.

A picture track (x03) answers its pictures instead. A `metadataList` with record
types (`//recordType.meta.std-cgi.com/MOTION`) keeps only recordings of those types;
each item names its own type in `metadataMatches`.
Switches (see faults.py) make it answer as different firmware does: a page cap with
"MORE" on every full page, one spelling of the position field only, totalMatches,
items of every track (trackIDList ignored), border items clipped to the query, no
size= in the playback URI, hostile values, an endless "MORE", no pictures and no
record-type filter (both answered `notSupport`).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from .recordings import ISAPI_TIME, RECORD_TYPES, URI_TIME, Recording

XMLNS = "http://www.hikvision.com/ver20/XMLSchema"
# Record type names as firmware and tools spell them, to the simulator's types.
TYPE_NAMES = {"time": ("time",), "timing": ("time",), "cmr": ("time",), "motion": ("motion",),
              "vmd": ("motion",), "videomotion": ("motion",), "alarm": ("alarm",), "alarminput": ("alarm",),
              "allevent": ("motion", "alarm")}


class BadSearch(ValueError):
    """Raised for a search description the device cannot read."""


def parse(body: bytes, position_field: str) -> dict:
    """The search description's fields; the position in the spelling(s) this device honours."""
    try:
        root = ET.fromstring(body)
        for el in root.iter():
            el.tag = el.tag.rsplit("}", 1)[-1]
        spellings = ("searchResultPosition", "searchResultPostion") if position_field == "both" else (position_field,)
        position = next((root.findtext(s) for s in spellings if root.findtext(s) is not None), None) or "0"
        kinds = set()
        for descriptor in root.iterfind("metadataList/metadataDescriptor"):
            kind = (descriptor.text or "").strip().rstrip("/").rsplit("/", 1)[-1].lower()
            if "recordtype" in kind:  # //recordType.meta.std-cgi.com: every type
                continue
            kinds.update(TYPE_NAMES.get(kind, ("unknown",)))
        return {
            "types": kinds,
            "search_id": root.findtext("searchID") or "",
            "track": int(root.findtext("trackIDList/trackID") or ""),
            "start": datetime.strptime(root.findtext("timeSpanList/timeSpan/startTime"), ISAPI_TIME),
            "end": datetime.strptime(root.findtext("timeSpanList/timeSpan/endTime"), ISAPI_TIME),
            "limit": int(root.findtext("maxResults") or 40),
            "position": int(position),
        }
    except (ET.ParseError, TypeError, ValueError) as exc:
        raise BadSearch(str(exc)) from None


def answer(device, query: dict, host: str) -> str:
    """The CMSearchResult document for one page."""
    faults = device.faults
    catalogue = device.catalogue
    limit = max(1, min(query["limit"], faults.page_cap or query["limit"]))
    position = query["position"]
    if faults.endless_more:
        page = [_fabricated(query, position + i) for i in range(limit)]
        found_count, status = None, "MORE"
    else:
        tracks = catalogue.tracks() if faults.ignore_track else [query["track"]]
        if query["track"] % 100 == 3:
            tracks = [t + 2 for t in tracks] if faults.ignore_track else tracks
            found = [p for t in tracks for p in catalogue.pictures(t, query["start"], query["end"])]
        else:
            found = [r for t in tracks for r in catalogue.recordings(t, query["start"], query["end"])]
        found = sorted((r for r in found if (not query["types"] or r.kind in query["types"])
                        and r.track // 100 not in faults.silent), key=lambda r: (r.start, r.track))
        found_count = len(found)
        page = found[position: position + limit]
        if not page:
            status = "NO MATCHES"
        elif faults.page_cap is not None:
            status = "MORE" if len(page) == limit else "OK"
        else:
            status = "MORE" if position + limit < len(found) else "OK"
    items = "".join(_item(rec, query, host, faults) for rec in page)
    total = f"<totalMatches>{found_count}</totalMatches>" if faults.total_matches and found_count is not None else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><CMSearchResult version="2.0" xmlns="{XMLNS}">'
            f"<searchID>{escape(query['search_id'])}</searchID><responseStatus>true</responseStatus>"
            f"<responseStatusStrg>{status}</responseStatusStrg><numOfMatches>{len(page)}</numOfMatches>{total}"
            f"<matchList>{items}</matchList></CMSearchResult>")


def _fabricated(query: dict, n: int) -> Recording:
    start = query["start"] + timedelta(seconds=n)
    return Recording(query["track"], start, start + timedelta(seconds=1), 1000)


def _item(rec, query: dict, host: str, faults) -> str:
    start, end = rec.start, rec.end
    if faults.clip:
        start, end = max(start, query["start"]), min(end, query["end"])
    uri = rec.playback_uri(host)
    if faults.no_size:
        uri = uri.rsplit("&size=", 1)[0]
    content = "picture" if rec.track % 100 == 3 else "video"
    values = {"trackID": str(rec.track), "startTime": f"{start:{ISAPI_TIME}}", "endTime": f"{end:{ISAPI_TIME}}",
              "contentType": content, "playbackURI": uri}
    hostile = dict(faults.hostile or {})
    if "name" in hostile:
        values["playbackURI"] = uri.replace(f"name={rec.file_name}", f"name={hostile.pop('name')}")
    if "size" in hostile and "&size=" in uri:
        values["playbackURI"] = values["playbackURI"].rsplit("&size=", 1)[0] + f"&size={hostile.pop('size')}"
    values.update({k: str(v) for k, v in hostile.items() if k in values})
    v = {k: escape(text) for k, text in values.items()}
    return (f"<searchMatchItem><sourceID>{{0000000000-0000-0000-0000-000000000000}}</sourceID>"
            f"<trackID>{v['trackID']}</trackID><timeSpan><startTime>{v['startTime']}</startTime>"
            f"<endTime>{v['endTime']}</endTime></timeSpan><mediaSegmentDescriptor>"
            f"<contentType>{v['contentType']}</contentType><codecType>H.264-BP</codecType>"
            f"<playbackURI>{v['playbackURI']}</playbackURI></mediaSegmentDescriptor>"
            f"<metadataMatches><metadataDescriptor>recordType.meta.std-cgi.com/{rec.kind}</metadataDescriptor>"
            "</metadataMatches></searchMatchItem>")


__all__ = ["BadSearch", "RECORD_TYPES", "URI_TIME", "answer", "parse"]
