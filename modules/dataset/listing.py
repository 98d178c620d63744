"""Which panoramas a run processes, and the name each one's outputs get.

``dataset.image_path`` is one of (checked in this order):

* a glob pattern (contains ``*``, ``?`` or ``[``): every matching *file*, taken literally (no extension filter;
  ``**`` matches folders recursively), sorted;
* a directory: every file whose extension is in ``extensions`` (case-insensitive), recursively when ``recursive``,
  sorted by path; hidden files and folders (name starting with ``.``) are skipped;
* a list file (suffix in ``list_suffixes``, e.g. ``tour.txt``): one path per line, relative paths relative to the
  list file's folder; blank lines and lines starting with ``#`` are ignored; listed files that do not exist are kept
  (the run reports them as failed);
* any other existing file: a single panorama.

Files under ``exclude`` (the output folders) are dropped when that folder lies inside the input folder or glob base;
duplicates are removed.

Output names (:func:`output_names`): the file's stem; when several inputs share a stem, each of them is prefixed with
as many of its parent folder names as are needed to tell them apart, joined with ``-``
(``tour/room1/rgb.png`` -> ``room1-rgb``); any clash left after that (``a.png`` and ``a.jpg`` in one folder) gets
``-2``, ``-3`` ... in sorted path order. Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``,
and a leading ``.`` becomes ``_`` (hidden names are reserved for unfinished outputs). The rule only looks at the
listed paths, so the same inputs always get the same names; adding an input whose stem clashes renames the
clashing ones (their old outputs are then not reused).
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import UserError

__all__ = ["InputListing", "InputListingError", "list_inputs", "output_names", "is_glob"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class InputListingError(UserError, ValueError):
    """``dataset.image_path`` names nothing usable (missing path, empty folder, unreadable list file)."""


@dataclass(frozen=True)
class InputListing:
    """The panoramas of a run.

    Attributes:
        paths: input files in processing order.
        single: True when ``image_path`` named one image file (its outputs go straight into the output folder).
        source: the ``image_path`` it came from.
    """

    paths: tuple[Path, ...]
    single: bool
    source: str


def is_glob(spec: str) -> bool:
    return bool(_GLOB_CHARS.search(spec))


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_under(path: Path, folders: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == f or f in resolved.parents for f in folders)


def _list_directory(root: Path, extensions: Iterable[str], recursive: bool) -> list[Path]:
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    walker = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in walker if p.suffix.lower() in exts and p.is_file() and not _is_hidden(p, root))


def _read_list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputListingError(f"{path}: cannot read the list of panoramas ({exc})") from exc
    out = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(os.path.expanduser(entry))
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def list_inputs(
    spec: str | os.PathLike,
    extensions: Iterable[str] = (".png", ".jpg", ".jpeg"),
    list_suffixes: Iterable[str] = (".txt", ".lst"),
    recursive: bool = True,
    exclude: Iterable[str | os.PathLike] = (),
) -> InputListing:
    """Resolve ``dataset.image_path`` into the list of panoramas (rules in the module docstring).

    Raises:
        InputListingError: the path does not exist, or it names no panorama at all.
    """
    text = os.path.expanduser(str(spec))
    path = Path(text)
    single = False
    base = path
    if is_glob(text) and not path.exists():
        found = sorted(Path(p) for p in glob.glob(text, recursive=True))
        paths = [p for p in found if p.is_file()]
        kind = "glob pattern"
        base = Path(*[part for part in itertools.takewhile(lambda s: not is_glob(s), path.parts)] or ["."])
    elif path.is_dir():
        paths = _list_directory(path, extensions, recursive)
        kind = "folder"
    elif path.is_file() and path.suffix.lower() in {s.lower() for s in list_suffixes}:
        paths = _read_list_file(path)
        kind = "list file"
    elif path.exists():
        paths, single, kind = [path], True, "file"
    else:
        raise InputListingError(f"{text}: no such file, folder or list (dataset.image_path)")
    # outputs inside the input folder are not inputs (unless the input folder is itself inside the output folder)
    base = base.resolve()
    excluded = [e for e in (Path(x).resolve() for x in exclude) if not (e == base or e in base.parents)]
    if not single:
        paths = [p for p in paths if not _is_under(p, excluded)]
    unique, seen = [], set()
    for p in paths:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if not unique:
        raise InputListingError(f"{text}: the {kind} names no panorama (extensions looked for: {sorted(extensions)})")
    return InputListing(paths=tuple(unique), single=single, source=text)


def _sanitise(name: str) -> str:
    name = _UNSAFE.sub("_", name)
    return "_" + name[1:] if name.startswith(".") else (name or "_")


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct, filesystem-safe output folder name for each input path (rule in the module docstring)."""
    parts = [Path(os.path.abspath(p)).with_suffix("").parts for p in paths]
    depth = [1] * len(parts)

    def name(i: int) -> str:
        return "-".join(_sanitise(s) for s in parts[i][-depth[i]:] if s != os.sep)

    while True:
        groups: dict[str, list[int]] = {}
        for i in range(len(parts)):
            groups.setdefault(name(i), []).append(i)
        grown = False
        for members in groups.values():
            # growing helps only when the members' paths differ (a.png and a.jpg in one folder get numbered instead)
            if len({parts[i] for i in members}) > 1:
                for i in members:
                    if depth[i] < len(parts[i]) - 1:  # never include the filesystem root
                        depth[i] += 1
                        grown = True
        if not grown:
            break
    names = [name(i) for i in range(len(parts))]
    order = sorted(range(len(names)), key=lambda i: str(paths[i]))
    count: dict[str, int] = {}
    taken = set(names)
    result = list(names)
    for i in order:
        n = names[i]
        count[n] = count.get(n, 0) + 1
        if count[n] > 1:
            k = count[n]
            while f"{n}-{k}" in taken:
                k += 1
            result[i] = f"{n}-{k}"
            taken.add(result[i])
            count[n] = k
    return result
