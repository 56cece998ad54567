"""The HTTP ceiling: waitress serving a constant answer from Flask, nothing else."""
from __future__ import annotations

import sys

import waitress
from flask import Flask

app = Flask(__name__)


@app.get("/api/claim")
def constant():
    return {"status": "wait", "retry_after": 1.0}


if __name__ == "__main__":
    server = waitress.create_server(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8)
    print(f"ceiling listening on http://127.0.0.1:{server.effective_port}", flush=True)
    server.run()
