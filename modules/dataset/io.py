"""Reading and validating input panoramas.

``load_panorama`` returns float RGB in [0, 1], channels first. What it accepts, and the documented conversions (each
done explicitly, logged in one line per image and recorded by :func:`read_image` in ``info["conversions"]``, which
the batch worker writes to meta.json's ``input``):

* 8-bit RGB: used as is.
* 16-bit RGB PNG: kept at full precision (read with OpenCV; Pillow would truncate it to 8 bits), scaled by 1/65535.
* grayscale (8 or 16 bit): replicated to three channels.
* RGBA / LA / palette images: alpha dropped (not composited), palette expanded.
* taller than ``max_height`` (``dataset.max_height``, the size guard's option): downscaled while decoding (JPEG:
  Pillow's DCT-domain draft first; then an area filter) to ``max_height`` rows.

Refused with :class:`InputError` (naming the file and the problem): missing, empty or unreadable files, images that
are not 2:1 (an equirectangular panorama is twice as wide as high), images smaller than ``min_height`` rows; these
checks read only the file header (:func:`read_image_size`), so a wrong-sized huge file is refused before decoding.
Pillow's decompression-bomb limit is switched off here: :mod:`modules.dataset.size_guard` replaces it with a limit
from the run's memory estimate.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import UserError

# the size guard (modules/dataset/size_guard.py) decides which sizes a run can take, from the header, before decoding
Image.MAX_IMAGE_PIXELS = None

__all__ = ["InputError", "load_panorama", "load_image", "read_image", "read_panorama", "read_image_size",
           "png_bit_depth"]

log = logging.getLogger(__name__)


class InputError(UserError, ValueError):
    """An input file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable (it crosses processes on Ray: decode tasks on CPU-only nodes)
        return type(self), (self.path, self.problem)


def png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk, or None if the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24]


def _read_16bit_rgb(path: Path, target: tuple[int, int] | None = None) -> np.ndarray:
    """A 16-bit PNG -> float32 [H, W, 3] in [0, 1], downscaled to ``target`` (w, h) while still 16-bit."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(path, "cannot be read as a 16-bit PNG")
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[..., :3][..., ::-1])  # BGR(A) -> RGB, alpha dropped
    if target is not None and arr.shape[1::-1] != target:
        arr = cv2.resize(arr, target, interpolation=cv2.INTER_AREA)
    return arr.astype(np.float32) / 65535.0


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header only (Pillow's lazy open: no pixel is decoded).

    Raises:
        InputError: missing, empty, a directory, or not an image Pillow can identify.
    """
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"cannot be read as an image ({exc})") from exc


def _target_size(width: int, height: int, max_height: int | None) -> tuple[int, int] | None:
    """(width, height) to downscale to, or None when the image is not taller than ``max_height``."""
    if max_height is None or height <= max_height:
        return None
    return max(1, round(width * max_height / height)), int(max_height)


def _resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


def read_image(path: str | Path, max_height: int | None = None) -> tuple[Tensor, dict]:
    """Any supported image file -> ([3, H, W] float32 RGB in [0, 1], info) with the conversions of the module
    docstring; images taller than ``max_height`` are downscaled to it while decoding.

    ``info``: ``conversions`` (list of what was done, empty for a plain RGB image; logged in one line),
    ``file_width`` / ``file_height`` (the file's size), ``mode`` (Pillow's mode of the file).
    """
    path = Path(path)
    _check_file(path)
    conversions: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own warnings (palette transparency ...): handled below
            with Image.open(path) as im:
                file_size = im.size
                target = _target_size(*file_size, max_height)
                if target is not None:
                    im.draft(None, target)  # JPEG: decode at 1/2 .. 1/8 scale, still at least the target size
                arr, mode = _decode(path, im, target, conversions)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"cannot be read as an image ({exc})") from exc
    if target is not None:
        conversions.append(f"downscaled from {file_size[0]}x{file_size[1]} to {target[0]}x{target[1]} "
                           "(dataset.max_height)")
    if conversions:
        log.info("%s: %s", path, "; ".join(conversions))
    image = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).clamp(0, 1)
    return image, {"conversions": conversions, "file_width": int(file_size[0]), "file_height": int(file_size[1]),
                   "mode": mode}


def _decode(path: Path, im: Image.Image, target: tuple[int, int] | None, conversions: list[str]):
    """(float32 [H, W, 3] array at ``target`` size, the file's mode); appends what it converted."""
    mode = im.mode
    depth = png_bit_depth(path)
    if depth == 16 and mode in ("RGB", "RGBA"):
        arr, target = _read_16bit_rgb(path, target), None
        if mode == "RGBA":
            conversions.append("alpha channel dropped (not composited)")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im.load()
        arr = np.asarray(im, dtype=np.float32)
        arr = arr / (65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0)
    else:
        im.load()
        image = im
        if mode in ("RGBA", "LA", "PA"):
            conversions.append("alpha channel dropped (not composited)")
        if mode in ("P", "PA"):
            conversions.append("palette expanded to RGB")
            if "transparency" in im.info:
                conversions.append("palette transparency dropped")
        if mode not in ("RGB", "L"):
            image = image.convert("RGBA" if mode in ("P", "PA") else "RGB").convert("RGB")
        if target is not None and image.size != target:
            image = image.resize(target, Image.Resampling.BOX)
        target = None
        arr = np.asarray(image, dtype=np.float32) / 255.0
    if target is not None and arr.shape[1::-1] != target:
        arr = _resize_array(arr, target)
    if arr.ndim == 2:
        conversions.append("grayscale replicated to RGB")
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return arr, mode


def load_image(path: str | Path, max_height: int | None = None) -> Tensor:
    """Any supported image file -> [3, H, W] float32 RGB in [0, 1] (:func:`read_image` without its info)."""
    return read_image(path, max_height)[0]


def read_panorama(path: str | Path, min_height: int = 32, max_height: int | None = None) -> tuple[Tensor, dict]:
    """An equirectangular panorama file -> ([3, H, W] float32 RGB in [0, 1] with W = 2 H, info of
    :func:`read_image`). The 2:1 and ``min_height`` checks use the header, before decoding.

    Raises:
        InputError: missing/empty/unreadable file, not 2:1, or smaller than ``min_height`` rows.
    """
    W, H = read_image_size(path)
    if W != 2 * H:
        raise InputError(path, f"is {W}x{H} pixels; an equirectangular panorama must be exactly twice as wide as high")
    if H < min_height:
        raise InputError(path, f"is only {H} pixels high; at least {min_height} are needed")
    return read_image(path, max_height)


def load_panorama(path: str | Path, min_height: int = 32, max_height: int | None = None) -> Tensor:
    """An equirectangular panorama file -> [3, H, W] float32 RGB in [0, 1] with W = 2 H (:func:`read_panorama`).

    Raises:
        InputError: missing/empty/unreadable file, not 2:1, or smaller than ``min_height`` rows.
    """
    return read_panorama(path, min_height, max_height)[0]
