"""Optional image preprocessing applied to face batches before depth prediction.

Every step maps ``[B, 3, h, w]`` float RGB in [0, 1] to the same shape, dtype and device; all are off by default
and an empty :class:`PreprocessChain` returns its input unchanged (the same tensor object). Steps, and when they
help:

* :class:`GaussianBlur` (``sigma`` in pixels) — noisy input: high-ISO / low-light photos, strong JPEG blocking,
  moire or aliasing from a down-sampled panorama. Depth networks tend to copy such high-frequency texture into
  the depth map ("texture copying"); a small blur (sigma 0.5-1.5 px at 512 px faces) suppresses it. It also
  softens true depth edges, so keep sigma small and leave it off for clean images.
* :class:`CLAHE` (contrast-limited adaptive histogram equalisation, Zuiderveld 1994; OpenCV) on the L channel
  of CIE Lab, so hue is kept — dark, low-contrast or back-lit scenes (unlit corners of indoor panoramas,
  under-exposed shots) where the network sees little structure. ``clip_limit`` 2-3 and an 8 x 8 tile grid are
  the usual choices; larger clip limits amplify noise. Runs on the CPU (faces are copied there and back).
* :class:`Dehaze` (dark channel prior, He, Sun & Tang, CVPR 2009 / TPAMI 2011, with guided-filter refinement,
  He et al. ECCV 2010) — outdoor scenes with haze, fog, smoke or underwater colour cast, where contrast fades
  with distance. Haze is itself a depth cue the networks use, and the prior fails on large bright or white
  surfaces (white walls, sky seen as haze), so it can hurt indoor or clean scenes: enable it only for hazy data
  and check on samples. For the faces of one panorama, ``shared_atmosphere=True`` estimates a single
  atmospheric light from the whole batch so that all faces are corrected consistently.

Default order in :func:`build_preprocess_chain`: blur (denoise) -> dehaze -> CLAHE (contrast last, so it does
not amplify noise that the blur removes or distort the haze model).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

__all__ = [
    "PreprocessError",
    "PreprocessStep",
    "GaussianBlur",
    "CLAHE",
    "Dehaze",
    "PreprocessChain",
    "build_preprocess_chain",
    "dark_channel",
    "guided_filter",
]


class PreprocessError(UserError, ValueError):
    """Bad preprocessing configuration or input shape."""


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise PreprocessError(f"preprocessing expects images [B, 3, h, w], got {tuple(images.shape)}")


class PreprocessStep:
    """A map ``[B, 3, h, w] -> [B, 3, h, w]`` (float RGB in [0, 1])."""

    name = "step"

    def __call__(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class GaussianBlur(PreprocessStep):
    """Separable Gaussian blur with reflect padding.

    Args:
        sigma: standard deviation in pixels (> 0).
        truncate: the kernel extends ``ceil(truncate * sigma)`` pixels each side.
    """

    name = "gaussian_blur"

    def __init__(self, sigma: float = 1.0, truncate: float = 3.0):
        if not sigma > 0 or not truncate > 0:
            raise PreprocessError(
                f"gaussian blur needs sigma > 0 and truncate > 0, got sigma={sigma}, truncate={truncate}"
            )
        self.sigma = float(sigma)
        self.truncate = float(truncate)

    def kernel(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """[K] normalised 1-D kernel, K = 2 ceil(truncate sigma) + 1."""
        radius = max(1, int(math.ceil(self.truncate * self.sigma)))
        x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
        k = torch.exp(-0.5 * (x / self.sigma) ** 2)
        return k / k.sum()

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        k = self.kernel(images.device, images.dtype)
        r = (k.numel() - 1) // 2
        B, C, h, w = images.shape
        x = images.reshape(B * C, 1, h, w)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect" if w > r else "replicate"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect" if h > r else "replicate"), k.view(1, 1, -1, 1))
        return x.reshape(B, C, h, w)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma, "truncate": self.truncate}


class CLAHE(PreprocessStep):
    """Contrast-limited adaptive histogram equalisation of the Lab lightness (OpenCV).

    The lightness is equalised at 8 bits (256 histogram bins, the setting ``clip_limit`` values in the
    literature refer to); the chroma channels keep full float precision.

    Args:
        clip_limit: contrast limit relative to a uniform histogram (OpenCV's ``clipLimit``; > 0).
        tile_grid: (rows, columns) of contextual tiles.
    """

    name = "clahe"

    def __init__(self, clip_limit: float = 2.0, tile_grid: Sequence[int] = (8, 8)):
        if not clip_limit > 0:
            raise PreprocessError(f"CLAHE clip_limit must be > 0, got {clip_limit}")
        tiles = tuple(int(t) for t in tile_grid)
        if len(tiles) != 2 or min(tiles) < 1:
            raise PreprocessError(f"CLAHE tile_grid must be two positive integers, got {tile_grid}")
        self.clip_limit = float(clip_limit)
        self.tile_grid = tiles

    def __call__(self, images: Tensor) -> Tensor:
        import cv2

        _check_images(images)
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=(self.tile_grid[1], self.tile_grid[0]))
        rgb = images.detach().permute(0, 2, 3, 1).to("cpu", torch.float32).clamp(0, 1).numpy()
        out = np.empty_like(rgb)
        for b in range(rgb.shape[0]):
            lab = cv2.cvtColor(np.ascontiguousarray(rgb[b]), cv2.COLOR_RGB2Lab)  # L in [0, 100]
            q = np.clip(np.rint(lab[..., 0] * 2.55), 0, 255).astype(np.uint8)
            lab[..., 0] = clahe.apply(q).astype(np.float32) / 2.55
            out[b] = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=images.device, dtype=images.dtype)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "clip_limit": self.clip_limit, "tile_grid": list(self.tile_grid)}


def dark_channel(images: Tensor, patch_size: int) -> Tensor:
    """Dark channel: minimum over colour channels and a ``patch_size`` square window (edge-replicated).

    Args:
        images: [B, 3, h, w].
    Returns:
        [B, 1, h, w].
    """
    r = patch_size // 2
    m = images.min(dim=1, keepdim=True).values
    m = F.pad(m, (r, patch_size - 1 - r, r, patch_size - 1 - r), mode="replicate")
    return -F.max_pool2d(-m, kernel_size=patch_size, stride=1)


def _box(x: Tensor, radius: int) -> Tensor:
    """Mean over a (2 radius + 1)^2 window, edge-replicated. [B, C, h, w] -> same."""
    k = 2 * radius + 1
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel_size=k, stride=1)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:
    """Grey-guide guided filter (He, Sun & Tang, ECCV 2010).

    Args:
        guide: [B, 1, h, w] guidance image.
        src: [B, 1, h, w] image to filter.
        radius: window radius in pixels. eps: regularisation (larger = smoother).
    Returns:
        [B, 1, h, w].
    """
    mean_i, mean_p = _box(guide, radius), _box(src, radius)
    cov_ip = _box(guide * src, radius) - mean_i * mean_p
    var_i = _box(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


class Dehaze(PreprocessStep):
    """Dark-channel-prior dehazing: ``J = (I - A) / max(t, t0) + A`` with ``t = 1 - omega * dark(I / A)``.

    Args:
        patch_size: dark-channel window in pixels (He et al.: 15 at ~600 px images).
        omega: fraction of haze removed (< 1 keeps a little haze for the sense of depth; He et al.: 0.95).
        t0: lower bound of the transmission (avoids amplifying noise in dense haze; He et al.: 0.1).
        top_fraction: the atmospheric light A is the mean colour of the pixels in this brightest fraction of
            the dark channel (He et al.: 0.001).
        guided_radius: radius of the guided filter that refines the transmission (0 = no refinement; the
            coarse transmission then leaves halos at depth edges).
        guided_eps: guided-filter regularisation.
        shared_atmosphere: estimate one A from the whole batch (the faces of one panorama) instead of per image.
    """

    name = "dehaze"

    def __init__(
        self,
        patch_size: int = 15,
        omega: float = 0.95,
        t0: float = 0.1,
        top_fraction: float = 0.001,
        guided_radius: int = 40,
        guided_eps: float = 1e-3,
        shared_atmosphere: bool = True,
    ):
        if int(patch_size) < 1 or not 0 < omega <= 1 or not 0 < t0 < 1 or not 0 < top_fraction <= 1:
            raise PreprocessError(
                f"dehaze needs patch_size >= 1, 0 < omega <= 1, 0 < t0 < 1, 0 < top_fraction <= 1; got "
                f"patch_size={patch_size}, omega={omega}, t0={t0}, top_fraction={top_fraction}"
            )
        if int(guided_radius) < 0 or not guided_eps > 0:
            raise PreprocessError(
                f"dehaze needs guided_radius >= 0 and guided_eps > 0, got {guided_radius}, {guided_eps}"
            )
        self.patch_size = int(patch_size)
        self.omega = float(omega)
        self.t0 = float(t0)
        self.top_fraction = float(top_fraction)
        self.guided_radius = int(guided_radius)
        self.guided_eps = float(guided_eps)
        self.shared_atmosphere = bool(shared_atmosphere)

    def atmospheric_light(self, images: Tensor, dark: Tensor) -> Tensor:
        """[B, 3, 1, 1] atmospheric light from the brightest ``top_fraction`` of the dark channel."""
        B = images.shape[0]
        if self.shared_atmosphere:
            d = dark.reshape(1, -1)
            pix = images.permute(1, 0, 2, 3).reshape(1, 3, -1)
        else:
            d = dark.reshape(B, -1)
            pix = images.reshape(B, 3, -1)
        k = max(1, int(round(self.top_fraction * d.shape[1])))
        top = d.topk(k, dim=1).indices  # [b, k]
        light = torch.gather(pix, 2, top[:, None, :].expand(-1, 3, -1)).mean(dim=2)  # [b, 3]
        return light.expand(B, 3)[:, :, None, None].clamp(min=1e-3)

    def transmission(self, images: Tensor, light: Tensor) -> Tensor:
        """[B, 1, h, w] refined transmission in [t0, 1]."""
        t = 1.0 - self.omega * dark_channel(images / light, self.patch_size)
        if self.guided_radius > 0:
            grey = images.mean(dim=1, keepdim=True)
            t = guided_filter(grey, t, self.guided_radius, self.guided_eps)
        return t.clamp(self.t0, 1.0)

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        light = self.atmospheric_light(images, dark_channel(images, self.patch_size))
        t = self.transmission(images, light)
        return ((images - light) / t + light).clamp(0.0, 1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "patch_size": self.patch_size,
            "omega": self.omega,
            "t0": self.t0,
            "top_fraction": self.top_fraction,
            "guided_radius": self.guided_radius,
            "guided_eps": self.guided_eps,
            "shared_atmosphere": self.shared_atmosphere,
        }


class PreprocessChain:
    """Steps applied in order; with no steps the input tensor itself is returned."""

    def __init__(self, steps: Sequence[PreprocessStep] = ()):
        self.steps = list(steps)

    def __call__(self, images: Tensor) -> Tensor:
        if not self.steps:
            return images
        _check_images(images)
        for step in self.steps:
            images = step(images)
        return images

    def __len__(self) -> int:
        return len(self.steps)

    def describe(self) -> list[dict[str, Any]]:
        return [step.describe() for step in self.steps]


STEP_TYPES: dict[str, type[PreprocessStep]] = {
    "gaussian_blur": GaussianBlur,
    "dehaze": Dehaze,
    "clahe": CLAHE,
}
DEFAULT_ORDER: tuple[str, ...] = ("gaussian_blur", "dehaze", "clahe")


def build_preprocess_chain(config: Mapping[str, Any] | None = None) -> PreprocessChain:
    """Chain from a config mapping such as::

        {"order": ["gaussian_blur", "dehaze", "clahe"],
         "gaussian_blur": {"enabled": False, "sigma": 1.0},
         "clahe": {"enabled": False, "clip_limit": 2.0, "tile_grid": [8, 8]},
         "dehaze": {"enabled": False, "patch_size": 15, "omega": 0.95, "t0": 0.1}}

    Steps without ``enabled: true`` are skipped; other keys are the step's constructor arguments.

    Raises:
        PreprocessError: unknown step name (lists the known ones) or bad parameters.
    """
    if not config:
        return PreprocessChain()
    unknown = [k for k in config if k != "order" and k not in STEP_TYPES]
    order = list(config.get("order", DEFAULT_ORDER))
    unknown += [k for k in order if k not in STEP_TYPES]
    if unknown:
        raise PreprocessError(f"unknown preprocessing step(s) {sorted(set(unknown))}; known: {', '.join(STEP_TYPES)}")
    steps = []
    for name in order:
        params = dict(config.get(name) or {})
        if params.pop("enabled", False):
            steps.append(STEP_TYPES[name](**params))
    return PreprocessChain(steps)
