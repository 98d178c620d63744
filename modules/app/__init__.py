"""The local web app: upload a panorama (or pick an example), watch it run, look around the 3D result, download
the files.

    python -m modules.app            # or: immersivedepth-app   (binds 127.0.0.1:7860)

A Starlette server with a static page (three.js vendored under ``static/vendor``: no CDN, no analytics, works
offline). Every run goes through :func:`modules.api.run` (``mode=render_dense``), the same code the command line
runs. Layout: :mod:`.settings` (command-line options), :mod:`.options` (form fields -> config overrides, weights
status), :mod:`.uploads` (checks on uploaded files), :mod:`.jobs` (one-at-a-time queue, per-session folders and their
clean-up), :mod:`.server` (routes).
"""

from .settings import AppSettings

__all__ = ["AppSettings", "create_app", "main"]


def create_app(settings: AppSettings | None = None):
    from .server import create_app as _create

    return _create(settings)


def main(argv: list[str] | None = None) -> int:
    try:
        from .server import main as _main
    except ModuleNotFoundError as exc:  # the web app's own dependencies are optional
        import sys

        print(f"immersivedepth-app: {exc.name} is not installed; the web app needs: "
              "pip install starlette uvicorn python-multipart", file=sys.stderr)
        return 2
    return _main(argv)
