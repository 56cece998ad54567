"""The live dashboard at `/`: one server-rendered page with a little JavaScript, no build step.

The page carries no data itself; its script reads the JSON API (with the token
typed into the page when the coordinator has one) and refreshes every few seconds.
"""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index():
    """The dashboard page."""
    config = current_app.config["TASKSERVER"]
    return render_template("dashboard.html", needs_token=bool(config.token))
