"""All-or-nothing panorama outputs, and the marker a resume trusts.

A panorama's files are written into a hidden staging folder beside their destination and moved into place only when
all of them are complete:

* batch (one folder per panorama): ``<out>/.<name>.partial-<host>-<pid>/`` is renamed to ``<out>/<name>/``; an
  existing ``<out>/<name>/`` is first renamed to ``.<name>.old-<host>-<pid>`` and deleted afterwards.
* single panorama (files straight into the run folder): ``<out>/.partial-<host>-<pid>/``; the old ``meta.json`` is
  deleted first, then the old outputs it listed, then the new files are moved in, ``meta.json`` last.

The marker is ``meta.json`` with ``"complete": true`` and the panorama's ``fingerprint``; it is always the last file
to appear. An exception or an interrupt (SIGINT, or SIGTERM turned into one by the batch mode) deletes the staging
folder; after SIGKILL or a power cut a hidden staging folder may stay behind: it is never read, and the next run
into the same output folder deletes it (:func:`remove_stale_staging`). Do not run two jobs into one output folder
at the same time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator

from . import remote

__all__ = [
    "MARKER", "staged_output", "read_marker", "is_complete", "marker_mtime", "remove_stale_staging",
    "remove_staging_of", "staging_tag",
]

log = logging.getLogger(__name__)

#: the file written last; its presence with "complete": true marks finished outputs
MARKER = "meta.json"

_STALE = re.compile(r"^\.(?:.+\.)?(?:partial|old)-")


def staging_tag() -> str:
    """``<host>-<pid>``: distinct for every process writing into a shared output folder."""
    return f"{_safe(socket.gethostname())}-{os.getpid()}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _commit_folder(staging: Path, final: Path) -> None:
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{staging_tag()}")
        _remove(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        _remove(old)


def _commit_files(staging: Path, final: Path) -> None:
    final.mkdir(parents=True, exist_ok=True)
    previous = read_marker(final)
    with contextlib.suppress(FileNotFoundError):
        (final / MARKER).unlink()  # from here on the folder is not trusted until the new marker appears
    new_names = {p.name for p in staging.iterdir()}
    for name in (previous or {}).get("outputs", []):
        if name not in new_names and "/" not in name and not name.startswith("."):
            _remove(final / name)
    for item in staging.iterdir():
        if item.name != MARKER:
            target = final / item.name
            if target.is_dir() and not target.is_symlink():
                _remove(target)
            os.replace(item, target)
    if (staging / MARKER).exists():
        os.replace(staging / MARKER, final / MARKER)
    staging.rmdir()


def staged_output(final: str | os.PathLike, into_existing: bool = False):
    """A context manager yielding an empty staging folder; on success its content is moved to ``final``, on any
    error or interrupt it is deleted.

    Args:
        final: the panorama's output folder, or a URI fsspec understands (:mod:`modules.runtime.remote`: the files
            are uploaded, the marker last).
        into_existing: False: ``final`` is the panorama's own folder and is replaced as a whole. True: ``final`` is a
            shared folder (the run folder of a single panorama) and only the files are moved in.
    """
    if remote.is_uri(final):
        return remote.staged_upload(str(final), MARKER, into_existing)
    return _staged_locally(Path(remote.local_path(str(final))), into_existing)


@contextlib.contextmanager
def _staged_locally(final: Path, into_existing: bool) -> Iterator[Path]:
    parent = final if into_existing else final.parent
    parent.mkdir(parents=True, exist_ok=True)
    name = f".partial-{staging_tag()}" if into_existing else f".{final.name}.partial-{staging_tag()}"
    staging = parent / name
    _remove(staging)
    staging.mkdir()
    try:
        yield staging
        (_commit_files if into_existing else _commit_folder)(staging, final)
    except BaseException:
        _remove(staging)
        raise


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The folder's meta.json if it exists, parses and says ``"complete": true``; else None."""
    if remote.is_uri(folder):
        return remote.read_marker(str(folder), MARKER)
    path = Path(remote.local_path(str(folder))) / MARKER
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("complete") is True else None


def is_complete(folder: str | os.PathLike, fingerprint: str) -> bool:
    """True when ``folder`` holds finished outputs made with ``fingerprint`` (every file meta.json lists exists)."""
    meta = read_marker(folder)
    if meta is None or meta.get("fingerprint") != fingerprint:
        return False
    if remote.is_uri(folder):
        return all(remote.exists(str(folder), name) for name in meta.get("outputs", []))
    return all((Path(remote.local_path(str(folder))) / name).exists() for name in meta.get("outputs", []))


def marker_mtime(folder: str | os.PathLike) -> float | None:
    """When the folder's marker was written (seconds since the epoch); None when unknown or absent."""
    if remote.is_uri(folder):
        return remote.marker_mtime(str(folder), MARKER)
    try:
        return (Path(remote.local_path(str(folder))) / MARKER).stat().st_mtime
    except OSError:
        return None


def remove_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Delete staging folders a killed run left in ``folder`` (hidden ``*.partial-*`` / ``*.old-*``); returns them.
    Nothing to do at a URI (no staging folder there)."""
    if remote.is_uri(folder):
        return []
    folder = Path(remote.local_path(str(folder)))
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if _STALE.match(p.name))
    for p in stale:
        _remove(p)
    if stale:
        log.warning("removed %d unfinished output folder(s) left by an interrupted run in %s", len(stale), folder)
    return stale


def remove_staging_of(folder: str | os.PathLike, name: str, tag: str | None = None) -> None:
    """Delete the staging folders of one panorama ``name`` in ``folder``: those of every process, or only the one of
    the process whose :func:`staging_tag` is ``tag``. Nothing to do at a URI."""
    if remote.is_uri(folder):
        return
    folder = Path(folder)
    prefix = ".partial-" if name == "" else f".{name}.partial-"
    if tag is not None:
        prefix += tag
        path = folder / prefix
        if path.exists():
            _remove(path)
        return
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(prefix):
                _remove(p)
