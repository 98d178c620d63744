"""Fingerprints that decide whether an existing output can be reused (``batch.skip_existing``).

A panorama's fingerprint is the SHA-256 of a canonical JSON document holding

* ``config``: the resolved config sections that change results (``batch.fingerprint.sections``, by default
  projection, predictor, alignment, fusion, refinement, scale, export; a section absent from the config is left
  out), with every key named in ``batch.fingerprint.ignore_keys`` removed at any depth (by default ``device``,
  ``checkpoint_dir``, ``allow_download``, ``batch_size``: where or how fast it runs, not what it computes). Paths,
  ``runtime.*``, ``batch.*``, ``dataset.*`` and ``hydra.*`` are never part of it.
* ``input``: the input file, either ``stat`` (its absolute path, size in bytes and modification time in ns; instant)
  or ``content`` (SHA-256 of its bytes; survives copying and touching, costs one read of the file).

Not covered: files a predictor reads besides the image (the synthetic predictor's ``distance.npy``), model weight
files behind an unchanged config, and code changes. Rerun with ``batch.skip_existing=false`` after changing those.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

__all__ = ["config_fingerprint_document", "input_fingerprint", "panorama_fingerprint", "INPUT_METHODS"]

INPUT_METHODS = ("stat", "content")


def _strip(value: Any, ignore: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


def config_fingerprint_document(cfg: DictConfig, sections: Iterable[str], ignore_keys: Iterable[str]) -> dict:
    """The resolved result-affecting config sections, with ``ignore_keys`` removed at every depth."""
    ignore = frozenset(ignore_keys)
    doc = {}
    for name in sections:
        if name in cfg and cfg[name] is not None:
            node = cfg[name]
            value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            doc[name] = _strip(value, ignore)
    return doc


def input_fingerprint(path: str | os.PathLike, method: str = "stat") -> dict:
    """Identity of an input file: ``stat`` (path, size, mtime) or ``content`` (SHA-256). Missing files -> None
    fields (such inputs fail anyway, and a failure is never reused)."""
    if method not in INPUT_METHODS:
        raise ValueError(f"batch.fingerprint.input must be one of {INPUT_METHODS}, got {method!r}")
    path = Path(path)
    try:
        if method == "stat":
            st = path.stat()
            return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return {"sha256": digest.hexdigest()}
    except OSError:
        return {"path": str(path), "missing": True}


def panorama_fingerprint(config_doc: dict, input_doc: dict) -> str:
    """SHA-256 hex digest of the canonical JSON of both documents."""
    text = json.dumps({"config": config_doc, "input": input_doc}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
