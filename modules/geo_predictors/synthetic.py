"""The synthetic, ground-truth-backed predictor.

It renders the true disparity (1 / planar depth) of each face from a known ERP distance map, then corrupts it the
way real networks err, independently per face:

    disparity = (s * true_disparity + t * median(true_disparity)) * (1 + warp_amplitude * field) * (1 + noise_std * n)

with s log-uniform in ``scale_range``, t uniform in ``shift_range``, ``field`` a smooth random field in [-1, 1] made of
a few plane waves of ``warp_frequency`` cycles per face width, and n standard Gaussian noise. ``outlier_faces`` faces
(chosen by the seed) are replaced by nonsense: a smooth random positive field unrelated to the scene, the way a
network fails on a textureless or mirrored face. Everything is drawn from
one ``torch.Generator`` seeded with ``seed`` and the face's index, so a face gets the same corruption whatever batch it
arrives in. With scale_range [1, 1], shift_range [0, 0], warp_amplitude 0 and noise_std 0 it returns the exact truth.

This is how stitching quality is measured without network weights; it is never a depth estimator for real photos.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..geometry.tangent import TangentCameras, erp_to_faces, face_cos_to_axis
from .base import DepthPredictor

__all__ = ["SyntheticPredictor", "CorruptionConfig", "GroundTruthError", "load_distance_map"]


class GroundTruthError(UserError, ValueError):
    """A ground-truth distance map that is missing, unreadable or does not fit the panorama."""


def load_distance_map(path: str | Path) -> np.ndarray:
    """Read a float ERP distance map [H, W] from ``.npy``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"{path}: ground-truth distance map not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt files
        raise GroundTruthError(f"{path}: not a readable .npy file ({exc})") from exc
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise GroundTruthError(f"{path}: expected a float [H, W] distance map, got dtype {arr.dtype} shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


class CorruptionConfig:
    """Per-face error model of the synthetic predictor (see module docstring)."""

    def __init__(
        self,
        scale_range: Sequence[float] = (1.0, 1.0),
        shift_range: Sequence[float] = (0.0, 0.0),
        warp_amplitude: float = 0.0,
        warp_frequency: float = 1.0,
        warp_waves: int = 3,
        noise_std: float = 0.0,
        outlier_faces: int = 0,
        seed: int = 0,
    ):
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.shift_range = (float(shift_range[0]), float(shift_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {list(scale_range)}")
        if self.shift_range[0] > self.shift_range[1]:
            raise ValueError(f"shift_range must satisfy lo <= hi, got {list(shift_range)}")
        self.warp_amplitude = float(warp_amplitude)
        self.warp_frequency = float(warp_frequency)
        self.warp_waves = int(warp_waves)
        self.noise_std = float(noise_std)
        self.outlier_faces = int(outlier_faces)
        if self.outlier_faces < 0:
            raise ValueError(f"outlier_faces must be >= 0, got {outlier_faces}")
        self.seed = int(seed)

    def as_dict(self) -> dict:
        return {
            "scale_range": list(self.scale_range),
            "shift_range": list(self.shift_range),
            "warp_amplitude": self.warp_amplitude,
            "warp_frequency": self.warp_frequency,
            "warp_waves": self.warp_waves,
            "noise_std": self.noise_std,
            "outlier_faces": self.outlier_faces,
            "seed": self.seed,
        }


class SyntheticPredictor(DepthPredictor):
    """Ground-truth-backed predictor.

    Args:
        gt_distance: path to a float32 ``.npy`` [H, W] ERP distance map on the input panorama's grid; ``None`` looks
            for ``distance.npy`` beside each input image (the layout of tools/make_synthetic_scene.py).
        corruption: :class:`CorruptionConfig` or a dict of its arguments.
        sample_mode: how the truth is read at face pixels: ``"bilinear"`` or ``"nearest"``.
        device: where the rendering runs (``auto`` | ``cpu`` | ``cuda`` | ``mps``).
    """

    is_network = False

    def __init__(
        self,
        gt_distance: str | None = None,
        corruption: CorruptionConfig | dict | None = None,
        sample_mode: str = "bilinear",
        device: str = "cpu",
    ):
        from .base import resolve_device

        self.gt_path = None if gt_distance in (None, "", "auto") else Path(str(gt_distance))
        if isinstance(corruption, CorruptionConfig):
            self.corruption = corruption
        else:
            self.corruption = CorruptionConfig(**dict(corruption or {}))
        if sample_mode not in ("bilinear", "nearest"):
            raise ValueError(f"sample_mode must be 'bilinear' or 'nearest', got {sample_mode!r}")
        self.sample_mode = sample_mode
        self._device = resolve_device(device)
        self._gt: Tensor | None = None
        self._gt_source: Path | None = None
        if self.gt_path is not None:
            self._set_gt(self.gt_path)

    @property
    def device(self) -> torch.device:
        return self._device

    def _set_gt(self, path: Path, erp_hw: tuple[int, int] | None = None) -> None:
        if self._gt_source != path:
            arr = load_distance_map(path)
            if not np.isfinite(arr).all() or (arr <= 0).any():
                raise GroundTruthError(f"{path}: distance map has non-finite or non-positive values")
            self._gt = torch.from_numpy(arr).to(self._device)
            self._gt_source = path
        if erp_hw is not None and tuple(self._gt.shape) != tuple(erp_hw):
            raise GroundTruthError(
                f"{path}: ground-truth distance map is {tuple(self._gt.shape)} but the panorama is {tuple(erp_hw)}"
            )

    def begin_panorama(self, image_path: str | None, erp_hw: tuple[int, int]) -> None:
        if self.gt_path is not None:
            path = self.gt_path
        elif image_path is not None:
            path = Path(image_path).with_name("distance.npy")
            if not path.exists() and path.with_name("depth.npy").exists():
                path = path.with_name("depth.npy")  # a perspective render: z-depth of each pixel
        else:
            raise GroundTruthError("predictor=synthetic needs predictor.gt_distance or a distance.npy beside the image")
        self._set_gt(path, erp_hw)

    def describe(self) -> dict:
        return {
            "name": "synthetic",
            "gt_distance": None if self._gt_source is None else str(self._gt_source),
            "corruption": self.corruption.as_dict(),
            "sample_mode": self.sample_mode,
        }

    def true_disparity(self, cameras: TangentCameras) -> Tensor:
        """Exact 1 / planar depth of every face pixel. Returns [F, S, S] on the predictor's device."""
        if self._gt is None:
            raise GroundTruthError("no ground truth loaded: call begin_panorama() or set gt_distance")
        cams = cameras.to(self._device, self._gt.dtype)
        # sample inverse distance (smooth across surfaces, bounded) and turn it into disparity along the ray
        inv = erp_to_faces((1.0 / self._gt)[None, None], cams, mode=self.sample_mode, antialias=False)[0, :, 0]
        return inv / face_cos_to_axis(cams)

    def corrupt(self, disparity: Tensor, face_ids: Tensor) -> Tensor:
        """Apply each face's deterministic corruption. disparity: [B, S, S]; face_ids: [B] long."""
        c = self.corruption
        B, S, _ = disparity.shape
        out = torch.empty_like(disparity)
        outliers = set()
        if c.outlier_faces:
            g = torch.Generator().manual_seed(c.seed * 1_000_003 - 1)
            outliers = set(torch.randperm(max(int(face_ids.max()) + 1, c.outlier_faces), generator=g)[: c.outlier_faces].tolist())
        coords = (torch.arange(S, dtype=torch.float64) + 0.5) / S
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        for b in range(B):
            g = torch.Generator().manual_seed(c.seed * 1_000_003 + int(face_ids[b]))
            u = torch.rand(2, generator=g, dtype=torch.float64)
            lo, hi = math.log(c.scale_range[0]), math.log(c.scale_range[1])
            scale = math.exp(lo + (hi - lo) * float(u[0]))
            shift = c.shift_range[0] + (c.shift_range[1] - c.shift_range[0]) * float(u[1])
            d = disparity[b].double().cpu()
            value = scale * d + shift * d.median()
            if c.warp_amplitude != 0.0:
                theta = torch.rand(c.warp_waves, generator=g, dtype=torch.float64) * (2 * math.pi)
                phase = torch.rand(c.warp_waves, generator=g, dtype=torch.float64) * (2 * math.pi)
                field = sum(
                    torch.sin(2 * math.pi * c.warp_frequency * (xx * torch.cos(t) + yy * torch.sin(t)) + p)
                    for t, p in zip(theta, phase)
                )
                field = field / field.abs().max().clamp_min(1e-12)
                value = value * (1.0 + c.warp_amplitude * field)
            if c.noise_std != 0.0:
                noise = torch.randn(S, S, generator=g, dtype=torch.float64)
                value = value * (1.0 + c.noise_std * noise)
            if int(face_ids[b]) in outliers:
                t = torch.rand(3, generator=g, dtype=torch.float64) * (2 * math.pi)
                field = torch.sin(2 * math.pi * (xx * torch.cos(t[0]) + yy * torch.sin(t[0])) + t[1])
                value = d.median() * (1.0 + 0.5 * field) * (0.5 + torch.rand(1, generator=g, dtype=torch.float64))
            out[b] = value.to(out)
        return out

    def predict(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        if cameras is None:
            return self._predict_full_frame(images)
        if images.shape[0] != cameras.num_faces or images.shape[-1] != cameras.size:
            raise ValueError(
                f"images {tuple(images.shape)} do not match {cameras.num_faces} cameras of size {cameras.size}"
            )
        out = self.corrupt(self.true_disparity(cameras), torch.arange(cameras.num_faces))
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return out.to(images.device, torch.float32)

    def _predict_full_frame(self, images: Tensor) -> Tensor:
        """Images that are the whole frame the ground truth describes (an ERP panorama in mode=equirect, a
        perspective photo in mode=single_view): 1 / ground truth (inverse distance or disparity), corrupted like
        face 0. An image of the ground truth's height but 2p columns wider is taken as the panorama padded
        circularly by p columns on each side."""
        if self._gt is None:
            raise GroundTruthError("no ground truth loaded: call begin_panorama() or set gt_distance")
        inv = (1.0 / self._gt)[None, None]
        (H, W), (h, w) = inv.shape[-2:], images.shape[-2:]
        if h == H and w > W and (w - W) % 2 == 0:  # a panorama padded circularly in longitude (mode=equirect)
            pad = (w - W) // 2
            inv = torch.cat((inv[..., W - pad:], inv, inv[..., :pad]), dim=-1)
        if tuple(inv.shape[-2:]) != tuple(images.shape[-2:]):
            inv = F.interpolate(inv, size=images.shape[-2:], mode="bilinear", align_corners=False)
        out = self.corrupt(inv[:, 0].expand(images.shape[0], -1, -1), torch.zeros(images.shape[0], dtype=torch.long))
        return out.to(images.device, torch.float32)

