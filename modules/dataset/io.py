"""Reading and validating input panoramas.

``load_panorama`` returns float RGB in [0, 1], channels first. What it accepts, and the documented conversions:

* 8-bit RGB: used as is.
* 16-bit RGB PNG: kept at full precision (read with OpenCV; Pillow would truncate it to 8 bits), scaled by 1/65535.
* grayscale (8 or 16 bit): replicated to three channels, with a warning.
* RGBA / LA / palette images: alpha dropped (not composited), palette expanded, with a warning.

Refused with :class:`InputError` (naming the file and the problem): missing, empty or unreadable files, images that
are not 2:1 (an equirectangular panorama is twice as wide as high), images smaller than ``min_height`` rows.
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

__all__ = ["InputError", "load_panorama", "load_image", "png_bit_depth"]

log = logging.getLogger(__name__)


class InputError(UserError, ValueError):
    """An input file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk, or None if the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24]


def _read_16bit_rgb(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(path, "cannot be read as a 16-bit PNG")
    if arr.ndim == 3:
        arr = arr[..., :3][..., ::-1]  # BGR(A) -> RGB, alpha dropped
    return arr.astype(np.float32) / 65535.0


def load_image(path: str | Path) -> Tensor:
    """Any supported image file -> [3, H, W] float32 RGB in [0, 1] (conversions as in the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            image = im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"cannot be read as an image ({exc})") from exc
    depth = png_bit_depth(path)
    if depth == 16 and mode in ("RGB", "RGBA"):
        arr = _read_16bit_rgb(path)
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float32)
        arr = arr / (65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0)
    else:
        if mode in ("RGBA", "LA", "PA"):
            warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
        if mode == "P" and "transparency" in image.info:
            warnings.warn(f"{path}: palette transparency dropped", stacklevel=2)
        if mode not in ("RGB", "L"):
            image = image.convert("RGBA" if mode in ("P", "PA") else "RGB").convert("RGB")
        arr = np.asarray(image, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        warnings.warn(f"{path}: grayscale image replicated to RGB", stacklevel=2)
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 2:  # LA read through a path that kept alpha
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).clamp(0, 1)


def load_panorama(path: str | Path, min_height: int = 32) -> Tensor:
    """An equirectangular panorama file -> [3, H, W] float32 RGB in [0, 1] with W = 2 H.

    Raises:
        InputError: missing/empty/unreadable file, not 2:1, or smaller than ``min_height`` rows.
    """
    image = load_image(path)
    _, H, W = image.shape
    if W != 2 * H:
        raise InputError(path, f"is {W}x{H} pixels; an equirectangular panorama must be exactly twice as wide as high")
    if H < min_height:
        raise InputError(path, f"is only {H} pixels high; at least {min_height} are needed")
    return image
