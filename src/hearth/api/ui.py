"""The dashboard: GET /ui (and /ui/) serves the page, GET /ui/{file} its committed static assets
from the `hearth.ui` package folder. The page itself reads the JSON admin endpoints."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(tags=["ui"])

UI_DIR = Path(str(files("hearth") / "ui"))
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page is small and changes with each release: always revalidate. It loads only its own
# files (no inline script or style) and reads only this server: the policy allows nothing else,
# and no other site may frame it.
HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@router.get("/ui", summary="The dashboard", include_in_schema=False)
@router.get("/ui/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return _asset("index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    return _asset(name)


def _asset(name: str) -> FileResponse:
    """A file directly in the UI folder with a known type; nothing else (no `..`, no folders)."""
    path = UI_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if media_type is None or path.parent != UI_DIR or not path.is_file():
        raise HTTPException(404, f"The dashboard has no file '{name}'.")
    return FileResponse(path, media_type=media_type, headers=HEADERS)
