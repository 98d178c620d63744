"""Checks on uploaded files, before a job is queued: every problem becomes one message that names the uploaded file.

The panorama is read with :func:`modules.dataset.io.load_panorama` (the loader every run uses), after a header-only
size check so that a huge image is refused before it is decoded. A ground-truth distance map (synthetic predictor) is
read with :func:`modules.geo_predictors.synthetic.load_distance_map` and must match the panorama's grid.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from PIL import Image

from ..dataset.io import InputError, load_panorama
from ..errors import UserError
from ..geo_predictors.synthetic import GroundTruthError, load_distance_map

__all__ = ["UploadError", "safe_name", "check_panorama", "check_ground_truth", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")


class UploadError(UserError):
    """An upload the app refuses; the message names the uploaded file (as the user called it) and the problem."""


def safe_name(name: str | None, default: str) -> str:
    """A file name made safe to store (letters, digits, ``._-``; no folders)."""
    base = Path(str(name or "")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    return base[:120] or default


def check_panorama(path: Path, shown_name: str, max_megapixels: float, min_height: int) -> tuple[int, int]:
    """Refuse anything that is not a readable 2:1 panorama of at most ``max_megapixels``; returns (height, width).

    Raises:
        UploadError: with a message like ``"room.jpg: is 1000x800 pixels; an equirectangular panorama must be
            exactly twice as wide as high"``.
    """
    if path.stat().st_size == 0:
        raise UploadError(f"{shown_name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        raise UploadError(f"{shown_name}: the image is too large to open safely (over "
                          f"{Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} megapixels)") from None
    except Exception as exc:  # Pillow raises several types for files that are not images
        raise UploadError(f"{shown_name}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    if width * height > max_megapixels * 1e6:
        raise UploadError(f"{shown_name}: is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); this "
                          f"server accepts at most {max_megapixels:g} megapixels (--max-megapixels)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load_panorama(path, min_height=min_height)
    except InputError as exc:
        raise UploadError(f"{shown_name}: {exc.problem}") from None
    return int(image.shape[1]), int(image.shape[2])


def check_ground_truth(path: Path, shown_name: str, size: tuple[int, int]) -> None:
    """A float [H, W] ``.npy`` distance map on the panorama's grid ``size`` = (H, W)."""
    try:
        distance = load_distance_map(path)
    except GroundTruthError as exc:
        raise UploadError(f"{shown_name}: {str(exc).split(': ', 1)[-1]}") from None
    if tuple(distance.shape) != tuple(size):
        raise UploadError(f"{shown_name}: the distance map is {distance.shape[1]}x{distance.shape[0]}, the panorama "
                          f"{size[1]}x{size[0]}; they must be the same size")
