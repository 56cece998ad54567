"""The design taskserver grew from, re-implemented faithfully for comparison.

Server: the rows of an xlsx go into a `multiprocessing.Queue` at start; each
`GET /` answers one row as comma-separated text, and a sentinel string once the
queue is empty. Nothing is durable, nothing is acknowledged: a task handed to a
worker that dies is gone.

Client: fetch a batch of 2 rows, run them in 2 processes, wait for both, fetch again.
"""
from __future__ import annotations

import multiprocessing
import queue
import sys
import time

import requests
from flask import Flask
from openpyxl import load_workbook

SENTINEL = "NO MORE TASKS"


def create_app(sheet: str) -> Flask:
    """The blog-post server: a queue filled from the sheet, one row per GET."""
    app = Flask(__name__)
    tasks: multiprocessing.Queue = multiprocessing.Queue()
    workbook = load_workbook(sheet, read_only=True)
    for row in workbook.active.iter_rows(values_only=True):
        tasks.put(",".join("" if v is None else str(v) for v in row))
    workbook.close()
    time.sleep(0.2)  # let the queue's feeder thread flush

    @app.get("/")
    def next_task():
        try:
            return tasks.get_nowait()
        except queue.Empty:
            return SENTINEL

    return app


def run_client(url: str, work, batch: int = 2) -> int:
    """The blog-post client loop; `work(row_text)` runs one task. Returns tasks run."""
    done = 0
    session = requests.Session()
    with multiprocessing.get_context("fork").Pool(batch) as pool:
        while True:
            rows = []
            for _ in range(batch):
                text = session.get(url, timeout=30).text
                if text == SENTINEL:
                    break
                rows.append(text)
            if rows:
                pool.map(work, rows)  # the batch barrier: wait for both before fetching again
                done += len(rows)
            if len(rows) < batch:
                return done


if __name__ == "__main__":  # serve: python -m bench.baselines.blogpost SHEET PORT
    import waitress

    server = waitress.create_server(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), threads=8)
    print(f"blogpost listening on http://127.0.0.1:{server.effective_port}", flush=True)
    server.run()
