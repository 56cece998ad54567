"""The blog-post server driven by the same pullers as taskserver's: one GET per task, keep-alive, no batches."""
from __future__ import annotations

import requests

from bench.baselines.blogpost import SENTINEL


def pull(url: str) -> int:
    """Fetch rows until the sentinel; returns how many (the no-op task runs in between)."""
    session, done = requests.Session(), 0
    while session.get(url, timeout=30).text != SENTINEL:
        done += 1
    return done
