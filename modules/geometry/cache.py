"""An explicit, bounded cache of derived geometry keyed by value.

Stages that derive geometry from a camera set (overlap samples, ERP <- face correspondences, sparse patterns) keep it
in a :class:`ValueCache` under a key built from *values*: the stage's own parameters, the cameras'
:meth:`~modules.geometry.tangent.TangentCameras.cache_key` (a digest of the rotations and fields of view, the face
count and size, dtype and device) and the sizes. A key never holds a tensor's address, so two camera sets that differ
only in their fields of view never share an entry and a freed tensor's reused memory can never be mistaken for it.
The pipeline owns one cache and hands it to its stages (:class:`modules.pipeline.PanoramaPipeline`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, TypeVar

__all__ = ["ValueCache"]

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
