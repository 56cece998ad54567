"""stub"""
from flask import Blueprint

bp = Blueprint("openapi", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def description():
    return {}
