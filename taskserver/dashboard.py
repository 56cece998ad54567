"""The live dashboard at `/`: one server-rendered page with a little JavaScript, no build step.

The page carries no data itself; its script reads the JSON API (with the token
typed into the page when the coordinator has one) and refreshes every few seconds.
"""
from __future__ import annotations

import secrets

from flask import Blueprint, Response, current_app, make_response, render_template

from .store import State

bp = Blueprint("dashboard", __name__)
# Only the page's own script runs (a fresh nonce per page), it talks only to the coordinator, and no
# other site may frame the page (a framing page could trick clicks on its buttons).
POLICY = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; img-src 'self';"
          " connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@bp.get("/")
def index():
    """The dashboard page."""
    config = current_app.config["TASKSERVER"]
    nonce = secrets.token_urlsafe(16)
    response = make_response(render_template("dashboard.html", needs_token=bool(config.token), nonce=nonce,
                                             states=[s.value for s in State]))
    response.headers["Content-Security-Policy"] = POLICY.format(nonce=nonce)
    response.headers["X-Frame-Options"] = "DENY"
    return response


# The tab's icon: a green progress bar, inline, so that the page needs nothing from elsewhere
# and a browser's request for /favicon.ico is not a 404 in the log.
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3"'
        ' fill="#333"/><rect x="2" y="6" width="12" height="4" rx="1" fill="#777"/>'
        '<rect x="2" y="6" width="8" height="4" rx="1" fill="#5cb85c"/></svg>')


@bp.get("/favicon.ico")
def favicon():
    """The dashboard's icon (SVG)."""
    return Response(ICON, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
