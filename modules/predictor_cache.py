"""Loaded predictors kept for reuse across runs in one process (the Python API, a web app, video frames).

``predictor_from_config(cfg.predictor, cfg.scale.method)`` is what the modes call to build their predictor (through
:func:`modules.geo_predictors.joint.instantiate_predictor`). Outside :func:`reuse_predictors` it builds a new one (the
command line: one run per process, nothing kept). Inside it, predictors come from a :class:`PredictorCache` keyed by
the resolved predictor config and the scale method (two configs that differ in anything get two models), least
recently used evicted beyond ``max_entries``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections import OrderedDict
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from .geo_predictors.joint import instantiate_predictor

__all__ = ["PredictorCache", "predictor_from_config", "reuse_predictors", "predictor_key"]


def predictor_key(cfg_predictor: DictConfig, scale_method: str | None = None) -> str:
    """The resolved predictor config and the scale method as canonical JSON (the cache key)."""
    doc = {"predictor": OmegaConf.to_container(cfg_predictor, resolve=True), "scale_method": scale_method}
    return json.dumps(doc, sort_keys=True, default=str)


class PredictorCache:
    """Predictors by :func:`predictor_key`; ``max_entries`` most recently used are kept (models are large)."""

    def __init__(self, max_entries: int = 2):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # how many predictors were instantiated (for callers and tests)

    def get(self, cfg_predictor: DictConfig, scale_method: str | None = None):
        key = predictor_key(cfg_predictor, scale_method)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            predictor = instantiate_predictor(cfg_predictor, scale_method)
            self.builds += 1
            self._items[key] = predictor
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
            return predictor

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_ACTIVE: contextvars.ContextVar[PredictorCache | None] = contextvars.ContextVar("predictor_cache", default=None)


@contextlib.contextmanager
def reuse_predictors(cache: PredictorCache) -> Iterator[PredictorCache]:
    """Within this block, :func:`predictor_from_config` takes predictors from ``cache``."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def predictor_from_config(cfg_predictor: DictConfig, scale_method: str | None = None):
    """A predictor for this config and ``scale.method``: from the active cache, or newly built when none is active."""
    cache = _ACTIVE.get()
    if cache is None:
        return instantiate_predictor(cfg_predictor, scale_method)
    return cache.get(cfg_predictor, scale_method)
