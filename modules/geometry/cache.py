"""An explicit, bounded cache of derived geometry keyed by value.

Stages that derive geometry from a camera set (overlap samples, ERP <- face correspondences, sparse patterns) keep it
in a :class:`ValueCache` under a key built from *values*: the stage's own parameters, the cameras'
:meth:`~modules.geometry.tangent.TangentCameras.cache_key` (a digest of the rotations and fields of view, the face
count and size, dtype and device) and the sizes. A key never holds a tensor's address, so two camera sets that differ
only in their fields of view never share an entry and a freed tensor's reused memory can never be mistaken for it.
The pipeline owns one cache and hands it to its stages (:class:`modules.pipeline.PanoramaPipeline`).

:class:`DiskCache` keeps such values (dicts of tensors and plain numbers) across processes in one folder, one file
per key: the file name is a digest of the key and the file holds the key itself and a format version, so a file is
used only for exactly that key. Writes go to a temporary file in the same folder and are moved into place with
:func:`os.replace` (atomic), so concurrent processes never read half a file; an unreadable, truncated or mismatched
file is ignored with a warning and rebuilt, and a folder that cannot be written only costs a warning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar

import torch

__all__ = ["DiskCache", "ValueCache"]

T = TypeVar("T")


class ValueCache:
    """Least-recently-used mapping ``key -> value`` holding at most ``max_entries`` values."""

    def __init__(self, max_entries: int = 16):
        if int(max_entries) < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value cached under ``key``, built by ``build()`` (and stored) when absent."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = build()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries


class DiskCache:
    """Values kept on disk in ``folder`` under a key of plain values.

    ``get(name, key, build, device, encode, decode)`` returns ``decode(stored dict)`` with the dict's tensors loaded
    onto ``device``, or builds the value, stores ``encode(value)`` (a ``dict[str, Tensor | int | float | str]``,
    written from the CPU) and returns what ``build()`` returned. ``decode`` may raise on a dict it does not accept
    (the file is then rebuilt). ``key`` must be a tuple of str/int/float/bool/None (its ``repr`` identifies it; never
    a device: a file written on one device loads onto any other).
    """

    #: bump when the stored layout of any value changes (old files then never match)
    FORMAT = 1

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(os.path.expanduser(os.fspath(folder)))

    def path(self, name: str, key: tuple) -> Path:
        digest = hashlib.sha1(repr((self.FORMAT, name, key)).encode()).hexdigest()[:24]
        return self.folder / f"{name}-{digest}.pt"

    def get(self, name: str, key: tuple, build: Callable[[], T], device: torch.device | str,
            encode: Callable[[T], dict] = lambda v: v, decode: Callable[[dict], T] = lambda d: d) -> T:
        path = self.path(name, key)
        if path.exists():
            value = self._load(path, name, key, device, decode)
            if value is not None:
                return value
        value = build()
        self._save(path, name, key, encode(value))
        return value

    def _load(self, path: Path, name: str, key: tuple, device, decode: Callable[[dict], Any]) -> Any:
        try:
            stored = torch.load(path, map_location=device, weights_only=True)
            if not (isinstance(stored, dict) and stored.get("format") == self.FORMAT and stored.get("name") == name
                    and stored.get("key") == repr(key) and isinstance(stored.get("value"), dict)):
                raise ValueError("written for another key or format")
            return decode(stored["value"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt, never fatal
            warnings.warn(f"geometry cache file {path} is unusable ({type(exc).__name__}: {exc}); rebuilding it",
                          RuntimeWarning, stacklevel=3)
            return None

    def _save(self, path: Path, name: str, key: tuple, value: dict) -> None:
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            cpu = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in value.items()}
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=self.folder)
            with os.fdopen(fd, "wb") as f:
                torch.save({"format": self.FORMAT, "name": name, "key": repr(key), "value": cpu}, f)
            os.replace(tmp, path)
        except OSError as exc:
            warnings.warn(f"could not write geometry cache file {path}: {exc}", RuntimeWarning, stacklevel=3)
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
