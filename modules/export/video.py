"""Video outputs: one frame's raw pipeline result (the unit a resumed run reuses), clip-wide 16-bit PNGs, and the
colour-mapped depth video.

* :func:`write_frame_raw`: ``distance.npy``, ``confidence.npy`` (float32) and, last, ``meta.json`` of one frame into
  its (staging) folder; the frame's scale is still its own (median 1 or per-frame metric).
* :func:`write_confidence_png`: confidence in [0, 1] as a 16-bit PNG (``value / 65535``).
* :func:`colorize_fixed`: inverse distance mapped through a colour map between fixed bounds (the same for every
  frame of a clip, so colours do not pump).
* :class:`DepthVideoWriter`: frames into an mp4 (OpenCV / FFmpeg, fourcc ``mp4v`` by default) written under a
  temporary name and renamed into place on :meth:`close` (an interrupted run never leaves a truncated video).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..pipeline import PipelineResult
from .atomic import atomic_path
from .depth_files import write_json, write_npy
from .outputs import faces_meta

__all__ = ["write_frame_raw", "read_frame_raw", "write_confidence_png", "colorize_fixed", "DepthVideoWriter",
           "RAW_FILES"]

RAW_FILES = ("distance.npy", "confidence.npy")


def write_frame_raw(folder: Path, result: PipelineResult, image_path: str, height: int, width: int,
                    predictor: dict | None, extra: dict | None = None) -> dict[str, Any]:
    """Write one frame's raw result into ``folder`` (meta.json last); returns the meta dictionary."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_npy(folder / "distance.npy", result.distance)
    write_npy(folder / "confidence.npy", result.confidence)
    timings = dict(result.timings)
    timings["writing"] = time.perf_counter() - start
    network = timings.pop("network", 0.0)
    meta = {
        "input": {"image_path": image_path, "height": int(height), "width": int(width)},
        "outputs": [*RAW_FILES, "meta.json"],
        "scale": result.info.get("scale"),
        "faces": faces_meta(result),
        "predictor": predictor,
        "timings": {"network": network, "non_network": timings, "non_network_total": sum(timings.values())},
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    meta.update(extra or {})
    write_json(folder / "meta.json", meta)
    return meta


def read_frame_raw(folder: Path) -> tuple[Tensor, Tensor]:
    """(distance [H, W], confidence [H, W]) float32 written by :func:`write_frame_raw`."""
    return (torch.from_numpy(np.load(folder / "distance.npy", allow_pickle=False)),
            torch.from_numpy(np.load(folder / "confidence.npy", allow_pickle=False)))


def write_confidence_png(path: str | os.PathLike, confidence: Tensor, compress_level: int = 1) -> None:
    c = confidence.detach().cpu().float().clamp(0, 1).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(c * 65535.0).astype(np.uint16)).save(tmp, format="PNG",
                                                                        compress_level=int(compress_level))


def colorize_fixed(distance: Tensor, inv_lo: float, inv_hi: float, colormap: str = "turbo") -> np.ndarray:
    """[H, W] distance -> [H, W, 3] uint8 RGB: inverse distance between ``inv_lo`` and ``inv_hi`` (near = warm);
    invalid pixels black."""
    d = distance.detach().cpu().double().numpy()
    valid = np.isfinite(d) & (d > 0)
    inv = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0)
    x = np.clip((inv - inv_lo) / max(inv_hi - inv_lo, 1e-12), 0, 1)
    rgb = matplotlib.colormaps[colormap](x)[..., :3]
    rgb[~valid] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)


class DepthVideoWriter:
    """RGB uint8 frames [H, W, 3] -> a video file, atomically (see module docstring).

    Args:
        path: the video's final path (its suffix picks the container).
        fps: frame rate.
        fourcc: OpenCV four-character codec code.
    """

    def __init__(self, path: str | os.PathLike, fps: float, fourcc: str = "mp4v"):
        self.path = Path(path)
        self.fps = float(fps)
        self.fourcc = str(fourcc)
        self._ctx = None
        self._tmp = None
        self._writer = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            self._ctx = atomic_path(self.path)
            self._tmp = self._ctx.__enter__()
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                self.abort()
                raise RuntimeError(f"{self.path}: OpenCV cannot write video with fourcc {self.fourcc!r}")
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place (nothing happens when no frame was written)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        self._ctx.__exit__(None, None, None)
        self._ctx = None

    def abort(self) -> None:
        """Drop the unfinished file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._ctx is not None:
            err = RuntimeError("aborted")
            try:
                self._ctx.__exit__(RuntimeError, err, None)
            except RuntimeError:
                pass
            self._ctx = None
