"""A web explorer for trained runs: a JSON API (encode, decode, sample, interpolate) and a
browser page over it. Needs the `explorer` extra (fastapi, uvicorn)."""

from vaelab.explorer.app import create_app
from vaelab.explorer.server import serve

__all__ = ["create_app", "serve"]
