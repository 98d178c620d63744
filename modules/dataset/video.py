"""Equirect video input: a video file (mp4 / mov / webm / ... decoded by OpenCV's FFmpeg backend) or a folder / glob
of frame images, read one frame at a time (a clip is never held in memory).

Which frames (:func:`select_frames`), in the source's own frame numbering (0-based):

* ``start`` / ``end``: the range ``[start, end)`` (``end`` null: to the last frame);
* ``target_fps``: resample to this rate: frame k of the output is the source frame nearest to time k / target_fps
  (never more frames than the source has; null: every frame);
* ``stride``: then keep every stride-th of those.

A frame is named by its source number everywhere (output files ``NNNNNN.*``, meta.json, the ``{frame}`` of a
per-frame ground truth). The path a predictor sees for frame N is ``<file>#frame=N`` (:func:`frame_path`).

Decoding errors: a frame that cannot be decoded raises :class:`FrameError` naming the file and the frame; the reader
stays usable for the frames after it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .io import InputError, load_panorama
from .listing import is_glob, list_inputs

__all__ = [
    "VIDEO_EXTENSIONS", "FrameError", "VideoSource", "open_source", "select_frames", "FrameReader", "frame_path",
    "parse_frame_path", "FrameLoader",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
_FRAME_SUFFIX = re.compile(r"^(?P<path>.*)#frame=(?P<frame>\d+)$")


class FrameError(InputError):
    """A frame that cannot be read or decoded."""


def frame_path(path: str | Path, frame: int) -> str:
    """The name a frame goes by for predictors and reports: ``<file>#frame=N``."""
    return f"{path}#frame={int(frame)}"


def parse_frame_path(name: str | None) -> tuple[str | None, int | None]:
    """Inverse of :func:`frame_path`: (file, frame) or (name, None) for a plain path."""
    if name is None:
        return None, None
    m = _FRAME_SUFFIX.match(str(name))
    return (m["path"], int(m["frame"])) if m else (str(name), None)


@dataclass(frozen=True)
class VideoSource:
    """A clip: ``kind`` "video" (one file) or "images" (``files``, one per frame), ``num_frames`` in the source,
    ``fps`` (the container's rate, or the configured one for images), frame size ``height`` x ``width`` (of the
    first frame)."""

    kind: str
    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    files: tuple[str, ...] = ()

    def file_of(self, frame: int) -> str:
        return self.files[frame] if self.kind == "images" else self.path

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.path, "num_frames": self.num_frames, "fps": self.fps,
                "height": self.height, "width": self.width}


def _cv2():
    import cv2

    return cv2


def open_source(spec: str, image_fps: float = 30.0, extensions: Sequence[str] = (".png", ".jpg", ".jpeg"),
                min_height: int = 32) -> VideoSource:
    """Describe the clip ``spec`` names: a video file, or a folder / glob / list of frame images (sorted).

    Raises:
        InputError: missing file, a video OpenCV cannot open, no frames, frames that are not 2:1 equirect.
    """
    p = Path(spec)
    if not is_glob(spec) and p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(p))
        try:
            if not cap.isOpened():
                raise InputError(p, "cannot be opened as a video (OpenCV/FFmpeg)")
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if count <= 0:  # containers without a frame count (some webm): count by demuxing
                count = 0
                while cap.grab():
                    count += 1
        finally:
            cap.release()
        if count <= 0:
            raise InputError(p, "the video has no frames")
        if width != 2 * height:
            raise InputError(p, f"frames are {width}x{height}; an equirectangular video must be twice as wide as high")
        if height < min_height:
            raise InputError(p, f"frames are only {height} pixels high; at least {min_height} are needed")
        return VideoSource("video", str(p.absolute()), count, fps if fps > 0 else float(image_fps), height, width)
    listing = list_inputs(spec, extensions, (".txt", ".lst"), recursive=False)
    files = tuple(str(Path(f).absolute()) for f in listing.paths)
    first = load_panorama(files[0], min_height=min_height)
    return VideoSource("images", str(Path(spec).absolute()) if not is_glob(spec) else spec, len(files),
                       float(image_fps), int(first.shape[1]), int(first.shape[2]), files)


def select_frames(num_frames: int, fps: float, start: int = 0, end: int | None = None, stride: int = 1,
                  target_fps: float | None = None) -> list[int]:
    """Source frame numbers to process (rules in the module docstring)."""
    if start < 0 or (end is not None and end <= start):
        raise UserError(f"video frame range [{start}, {end}) is empty or negative")
    if stride < 1:
        raise UserError(f"video.stride must be >= 1, got {stride}")
    stop = num_frames if end is None else min(int(end), num_frames)
    if start >= stop:
        raise UserError(f"video frame range starts at {start} but the clip has {num_frames} frames")
    if target_fps is None or target_fps <= 0 or target_fps >= fps:
        if target_fps is not None and target_fps <= 0:
            raise UserError(f"video.target_fps must be positive, got {target_fps}")
        frames = list(range(start, stop))
    else:
        step = fps / float(target_fps)
        frames, k = [], 0
        while True:
            f = start + int(round(k * step))
            if f >= stop:
                break
            frames.append(f)
            k += 1
    return frames[::stride]


class FrameReader:
    """Reads frames of one source, in any order, fastest in increasing order (a video is decoded forward and kept
    open; a jump backwards or more than ``max_skip`` frames ahead seeks).

    Args:
        source: from :func:`open_source`.
        min_height: frames smaller than this are refused.
        max_skip: forward gaps up to this many frames are decoded through instead of seeking.
    """

    def __init__(self, source: VideoSource, min_height: int = 32, max_skip: int = 64):
        self.source = source
        self.min_height = int(min_height)
        self.max_skip = int(max_skip)
        self._cap = None
        self._next = 0  # frame number the open capture returns next

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, frame: int) -> Tensor:
        """Frame ``frame`` as [3, H, W] float32 RGB in [0, 1].

        Raises:
            FrameError: the frame is missing, cannot be decoded or is not a valid equirect frame.
        """
        src = self.source
        if not 0 <= frame < src.num_frames:
            raise FrameError(src.path, f"frame {frame} is outside the clip's {src.num_frames} frames")
        if src.kind == "images":
            try:
                return load_panorama(src.files[frame], min_height=self.min_height)
            except InputError as exc:
                raise FrameError(src.files[frame], f"frame {frame}: {exc.problem}") from exc
        return self._read_video(frame)

    def _read_video(self, frame: int) -> Tensor:
        cv2 = _cv2()
        src = self.source
        if self._cap is None:
            self._cap = cv2.VideoCapture(src.path)
            self._next = 0
            if not self._cap.isOpened():
                self.close()
                raise FrameError(src.path, "cannot be opened as a video")
        if not (self._next <= frame <= self._next + self.max_skip):
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
            self._next = frame
        while self._next < frame:
            self._cap.grab()
            self._next += 1
        ok, bgr = self._cap.read()
        self._next += 1
        if not ok or bgr is None:
            # the decoder may have lost its place: the next frame is sought, not read on from here
            self.close()
            raise FrameError(src.path, f"frame {frame} could not be decoded")
        if bgr.shape[0] != src.height or bgr.shape[1] != src.width:
            raise FrameError(src.path, f"frame {frame} is {bgr.shape[1]}x{bgr.shape[0]}, the clip is "
                                       f"{src.width}x{src.height}")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        scale = 65535.0 if rgb.dtype == np.uint16 else 255.0
        return torch.from_numpy(rgb.astype(np.float32) / scale).permute(2, 0, 1)


class FrameLoader:
    """Loads what a task names: a plain panorama path, or a video frame ``<file>#frame=N`` (:func:`frame_path`).
    One video stays open between calls, so frames asked for in increasing order are decoded in one forward pass.

    Args:
        min_height: frames / panoramas smaller than this are refused.
    """

    def __init__(self, min_height: int = 32):
        self.min_height = int(min_height)
        self._reader: FrameReader | None = None

    def load(self, name: str) -> Tensor:
        """[3, H, W] float32 RGB in [0, 1]. Raises :class:`InputError` / :class:`FrameError`."""
        path, frame = parse_frame_path(name)
        if frame is None or Path(path).suffix.lower() not in VIDEO_EXTENSIONS:
            try:
                return load_panorama(path, min_height=self.min_height)
            except InputError as exc:
                if frame is None:
                    raise
                raise FrameError(path, f"frame {frame}: {exc.problem}") from exc
        if self._reader is None or self._reader.source.path != str(Path(path).absolute()):
            self.close()
            self._reader = FrameReader(open_source(path, min_height=self.min_height), self.min_height)
        return self._reader.read(frame)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
