"""Outputs at a URI fsspec understands: ``batch.output_dir=s3://bucket/run`` (s3fs), ``gs://...`` (gcsfs),
``memory://...`` (tests), any protocol an installed fsspec implementation registers.

Who writes: the worker that ran the panorama (the local process, or each Ray actor) writes the files into a local
temporary folder, then uploads them; the driver only reads the markers (resume) and writes summary.json into the run
folder (``paths.output_dir``, a local path), then uploads it next to the outputs. ``file://`` URIs are plain local
paths (:func:`local_path`) and keep the local guarantees.

What is lost against a local or shared path: object stores have no atomic rename, so a panorama's files appear one
by one. The guarantee kept is the marker: the old ``meta.json`` is deleted before anything else is touched and the
new one is uploaded last, so a reader (and a resume) trusts a folder only once all its files are there. A worker
killed during an upload leaves some files without a marker: never trusted, replaced by the next run (there is no
hidden staging folder to clean up remotely). A single panorama (files straight into the URI folder) overwrites the
files it writes and leaves others in place.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..extras import require

__all__ = ["is_uri", "local_path", "join", "check", "staged_upload", "upload", "read_bytes", "read_marker", "exists",
           "marker_mtime"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path) -> bool:
    """A URI for fsspec (``<protocol>://...``, not ``file://``); local paths and ``file://`` URIs are not."""
    text = str(path)
    return bool(_URI.match(text)) and not text.startswith("file://")


def local_path(path: str) -> str:
    """``file:///a/b`` -> ``/a/b``; anything else unchanged."""
    return path[len("file://"):] if path.startswith("file://") else path


def join(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}"


def check(uri: str) -> None:
    """Raise a user error now (before any work) when no installed fsspec implementation opens ``uri``."""
    _filesystem(uri)


def _filesystem(uri: str):
    fsspec = require("fsspec", f"an output URI ({uri})")
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:  # no implementation of that protocol installed
        from ..errors import UserError

        raise UserError(f"{uri}: fsspec cannot open it ({exc}); install the package of that protocol "
                        f"(s3fs for s3://, gcsfs for gs://)") from None


@contextlib.contextmanager
def staged_upload(uri: str, marker: str, into_existing: bool) -> Iterator[Path]:
    """Yield an empty local folder; on success upload its files to ``uri``, ``marker`` last (see module docstring);
    on any error or interrupt upload nothing. The local folder is deleted in every case."""
    fs, root = _filesystem(uri)
    local = Path(tempfile.mkdtemp(prefix="immersivedepth-out-"))
    try:
        yield local
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{marker}")  # from here on the folder is not trusted until the new marker appears
        if not into_existing and fs.exists(root):
            fs.rm(root, recursive=True)  # the previous outputs of this panorama
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for item in [p for p in files if p.name != marker or p.parent != local] + [local / marker]:
            if not item.exists():
                continue
            target = f"{root}/{item.relative_to(local).as_posix()}"
            fs.makedirs(target.rpartition("/")[0], exist_ok=True)
            fs.put_file(str(item), target)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def upload(local: Path, uri: str) -> None:
    """Copy one local file to ``uri`` (e.g. summary.json next to the outputs)."""
    fs, path = _filesystem(uri)
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    fs.put_file(str(local), path)


def read_bytes(uri: str) -> bytes:
    fs, path = _filesystem(uri)
    return fs.cat_file(path)


def read_marker(uri: str, marker: str) -> dict | None:
    """The folder's marker (meta.json) if it exists, parses and says ``"complete": true``; else None."""
    fs, root = _filesystem(uri)
    try:
        with fs.open(f"{root}/{marker}", "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("complete") is True else None


def exists(uri: str, name: str) -> bool:
    fs, root = _filesystem(uri)
    return fs.exists(f"{root}/{name}")


def marker_mtime(uri: str, marker: str) -> float | None:
    """When the marker was written (seconds since the epoch), where the filesystem tells; else None."""
    fs, root = _filesystem(uri)
    try:
        return fs.modified(f"{root}/{marker}").timestamp()
    except (OSError, NotImplementedError, AttributeError, ValueError):
        return None
