"""The demo page at /demo: draw a digit or drop a photo, see the top-k labels and their explanations.

Plain HTML, CSS and JavaScript from `service/static/` (packaged by `bentoml build`: bentofile.yaml
includes them), served from the service's own origin. The page loads nothing from anywhere else, so it
works offline, and calls the service's public routes only: /classify, /explain and /features.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

PATH = "/demo"
STATIC = Path(__file__).parent / "static"


def demo_files() -> StaticFiles:
    """The page at `/demo/` (`/demo` redirects there), its script modules and style sheet beside it."""
    return StaticFiles(directory=STATIC, html=True)
