"""The synthetic, ground-truth-backed predictor.

Size (over the ~450-line guide): every error model is a few lines of the one corruption it describes, kept beside
the others so that their order and seeding read in one place.

It renders the true disparity (1 / planar depth) of each face from a known ERP distance map, then corrupts it the
way real networks err, independently per face:

    disparity = (s * true_disparity + t * median(true_disparity)) * (1 + warp_amplitude * field) * (1 + noise_std * n)

with s log-uniform in ``scale_range``, t uniform in ``shift_range``, ``field`` a smooth random field in [-1, 1] made of
a few plane waves of ``warp_frequency`` cycles per face width, and n standard Gaussian noise. ``outlier_faces`` faces
(chosen by the seed) are replaced by nonsense: a smooth random positive field unrelated to the scene, the way a
network fails on a textureless or mirrored face.

Further error models, each standing for something real networks (MiDaS, Depth Anything) do (all off by default):

* ``edge_blur`` (Gaussian sigma as a fraction of the face width): the true disparity is blurred before anything
  else: networks smear depth edges (foreground bleeds into background over several pixels).
* ``curve_strength``: a per-face monotone, non-affine map of disparity, applied before the scale and shift,
  ``d -> d_max (1 - exp(-k x)) / (1 - exp(-k))`` with ``x = d / d_max`` (``d_max`` the face's largest true disparity)
  and k uniform in [-curve_strength, curve_strength]: k > 0 compresses the near range and stretches the far range
  (relative to the near), k < 0 the opposite, differently in every image, so overlaps disagree non-linearly. Smooth
  with a finite slope at 0 (the sky stays at 0); not a polynomial.
* ``infinity_distance``: pixels whose (blurred) true distance exceeds it, the sky (distance ``inf``) included,
  predict raw disparity 0 whatever the face's shift: the networks' output floor for sky and very far content.
  ``null``: the sky follows the face's affine map like any other pixel.
* ``additive_noise``: Gaussian noise of std ``additive_noise x (p98 - p2 of the face's disparity)``, added last: a
  noise floor that does not shrink where disparity does (far field, sky).
* ``low_info_sky`` / ``low_info_warp``: faces whose central half (per axis) is at least ``low_info_sky`` sky see
  little to go by (a few roof edges against the sky) and get a strong smooth multiplicative warp of amplitude
  ``low_info_warp``: there the prediction is close to arbitrary. (Faces of a blank wall or floor are not modelled:
  at icosahedron level 0 with the default padding no face sees only one plane.)

Everything is drawn from ``torch.Generator`` objects seeded with ``seed`` and the face's index (its cameras'
``face_ids``: its place among all faces of all rotated copies), so a face gets the same corruption whatever batch it
arrives in; the models above draw from a second generator, so turning them on leaves the draws of the original ones
unchanged. The outlier faces are drawn among 0 .. the call's largest index, so a second call for a second rotated copy
draws its own. With scale_range [1, 1], shift_range [0, 0] and every amplitude 0 it returns the exact truth.

This is how stitching quality is measured without network weights; it is never a depth estimator for real photos.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..device import resolve_device
from ..errors import UserError
from ..geometry.tangent import TangentCameras, erp_to_faces, face_cos_to_axis
from .base import DepthPredictor

__all__ = ["SyntheticPredictor", "CorruptionConfig", "GroundTruthError", "MetricErrorConfig", "load_distance_map"]


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
        curve_strength: float = 0.0,
        edge_blur: float = 0.0,
        additive_noise: float = 0.0,
        infinity_distance: float | None = None,
        low_info_sky: float | None = None,
        low_info_warp: float = 0.0,
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
        self.curve_strength = float(curve_strength)
        self.edge_blur = float(edge_blur)
        self.additive_noise = float(additive_noise)
        self.infinity_distance = None if infinity_distance is None else float(infinity_distance)
        self.low_info_sky = None if low_info_sky is None else float(low_info_sky)
        self.low_info_warp = float(low_info_warp)
        for name in ("curve_strength", "edge_blur", "additive_noise", "low_info_warp"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.infinity_distance is not None and not self.infinity_distance > 0:
            raise ValueError(f"infinity_distance must be positive or null, got {infinity_distance}")

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
            "curve_strength": self.curve_strength,
            "edge_blur": self.edge_blur,
            "additive_noise": self.additive_noise,
            "infinity_distance": self.infinity_distance,
            "low_info_sky": self.low_info_sky,
            "low_info_warp": self.low_info_warp,
        }


def _smooth_field(g: torch.Generator, waves: int, frequency: float, xx: Tensor, yy: Tensor) -> Tensor:
    """A sum of ``waves`` random plane waves of ``frequency`` cycles per face width, scaled to [-1, 1]. [S, S]."""
    theta = torch.rand(waves, generator=g, dtype=torch.float64) * (2 * math.pi)
    phase = torch.rand(waves, generator=g, dtype=torch.float64) * (2 * math.pi)
    field = sum(
        torch.sin(2 * math.pi * frequency * (xx * torch.cos(t) + yy * torch.sin(t)) + p) for t, p in zip(theta, phase)
    )
    return field / field.abs().max().clamp_min(1e-12)


def _surface_median(d: Tensor) -> Tensor:
    """Median of the positive disparities (the surfaces; the sky has 0), 0 if there are none."""
    positive = d[d > 0]
    return positive.median() if positive.numel() else d.new_zeros(())


def _sky_fraction(d: Tensor) -> float:
    """Fraction of the central half (per axis) of a face [S, S], the part the face is about, that is sky (true
    disparity 0)."""
    S = d.shape[-1]
    centre = d[S // 4: S - S // 4, S // 4: S - S // 4]
    return float((centre <= 0).double().mean())


def _gaussian_blur(d: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [S, S] with standard deviation ``sigma`` pixels (edges replicated)."""
    if sigma <= 0:
        return d
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=d.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = F.pad(d[None, None], (r, r, r, r), mode="replicate")
    img = F.conv2d(img, k.view(1, 1, 1, -1))
    img = F.conv2d(img, k.view(1, 1, -1, 1))
    return img[0, 0]


class SyntheticPredictor(DepthPredictor):
    """Ground-truth-backed predictor.

    Args:
        gt_distance: path to a float32 ``.npy`` [H, W] ERP distance map on the input panorama's grid; ``None`` looks
            for ``distance.npy`` beside each input image (the layout of tools/make_synthetic_scene.py). For a video
            (mode=video) it may name one map per frame with ``{frame}`` standing for the source frame number, e.g.
            ``clip/distance/{frame:06d}.npy`` (the layout of tools/make_synthetic_video.py).
        corruption: :class:`CorruptionConfig` or a dict of its arguments.
        sample_mode: how the truth is read at face pixels: ``"bilinear"`` or ``"nearest"``.
        device: where the rendering runs (``auto`` | ``cpu`` | ``cuda`` | ``mps``).
        metric: ``None`` (relative only) or a :class:`MetricErrorConfig` / dict of its arguments: the predictor is
            then also metric (:meth:`predict_metric_depth`: true metric depth x a per-view error).
    """

    is_network = False

    def __init__(
        self,
        gt_distance: str | None = None,
        corruption: CorruptionConfig | dict | None = None,
        sample_mode: str = "bilinear",
        device: str = "auto",
        metric: MetricErrorConfig | dict | None = None,
    ):

        if metric is None or isinstance(metric, MetricErrorConfig):
            self.metric = metric
        else:
            self.metric = MetricErrorConfig(**dict(metric))
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
        #: the image whose ground truth mode=eval handed over (use_ground_truth)
        self._given_for: str | None = None
        if self.gt_path is not None and "{frame" not in str(self.gt_path):
            self._set_gt(self.gt_path)

    @property
    def device(self) -> torch.device:
        return self._device

    def _set_gt(self, path: Path, erp_hw: tuple[int, int] | None = None) -> None:
        if self._gt_source != path:
            arr = load_distance_map(path)
            if np.isnan(arr).any() or (arr <= 0).any() or np.isneginf(arr).any():
                raise GroundTruthError(f"{path}: distance map has NaN or non-positive values (+inf marks the sky)")
            self._gt = torch.from_numpy(arr).to(self._device)
            self._gt_source = path
        if erp_hw is not None and tuple(self._gt.shape) != tuple(erp_hw):
            raise GroundTruthError(
                f"{path}: ground-truth distance map is {tuple(self._gt.shape)} but the panorama is {tuple(erp_hw)}"
            )

    def use_ground_truth(self, image_path: str, distance: Tensor, source: str) -> None:
        """Render ``image_path`` from the evaluation's paired ground truth (``distance`` [H, W]; +inf sky; invalid
        pixels, NaN or <= 0, are rendered as sky: they are not scored). An explicit ``gt_distance`` wins."""
        if self.gt_path is not None:
            return
        d = torch.as_tensor(distance, dtype=torch.float32)
        if d.dim() != 2:
            raise GroundTruthError(f"{source}: expected an [H, W] distance map, got shape {tuple(d.shape)}")
        self._gt = torch.where(torch.isfinite(d) & (d > 0) | torch.isposinf(d), d, torch.inf).to(self._device)
        self._gt_source, self._given_for = Path(source), str(image_path)

    def begin_panorama(self, image_path: str | None, erp_hw: tuple[int, int]) -> None:
        if self.gt_path is None and image_path is not None and str(image_path) == self._given_for:
            if tuple(self._gt.shape) != tuple(erp_hw):
                raise GroundTruthError(f"{self._gt_source}: ground-truth distance map is {tuple(self._gt.shape)} but "
                                       f"the panorama {image_path} is {tuple(erp_hw)}")
            return
        # a video frame is named "<file>#frame=N" (modules/dataset/video.py); gt_distance may hold "{frame}"
        match = re.match(r"^(.*)#frame=(\d+)$", image_path or "")
        if match:
            image_path = match[1]
        if self.gt_path is not None and "{frame" in str(self.gt_path):
            if not match:
                raise GroundTruthError(f"predictor.gt_distance={self.gt_path} names one map per video frame, but "
                                       f"{image_path} is not a video frame")
            path = Path(str(self.gt_path).format(frame=int(match[2])))
        elif self.gt_path is not None:
            path = self.gt_path
        elif image_path is not None:
            path = Path(image_path).with_name("distance.npy")
            if not path.exists() and path.with_name("depth.npy").exists():
                path = path.with_name("depth.npy")  # a perspective render: z-depth of each pixel
        else:
            raise GroundTruthError("predictor=synthetic needs predictor.gt_distance or a distance.npy beside the image")
        self._set_gt(path, erp_hw)

    def describe(self) -> dict:
        out = {
            "name": "synthetic",
            "gt_distance": None if self._gt_source is None else str(self._gt_source),
            "corruption": self.corruption.as_dict(),
            "sample_mode": self.sample_mode,
        }
        if self.metric is not None:
            out["metric"] = self.metric.as_dict()
        return out

    # ------------------------------------------------------------------ metric mode (see MetricErrorConfig)
    @property
    def is_metric(self) -> bool:
        return self.metric is not None

    def metric_view(self):
        if self.metric is None:
            return super().metric_view()
        from .base import MetricView

        return MetricView(self.metric.view_fov_deg, self.metric.view_size, None)

    def predict_metric_depth(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        """True metric depth of each view (z, scene units = metres) times its view's error; [B, h, w] float32."""
        if self.metric is None:
            return super().predict_metric_depth(images, cameras)
        if cameras is None or images.shape[0] != cameras.num_faces or images.shape[-1] != cameras.size:
            raise ValueError("the synthetic metric mode needs the cameras of the images it is given")
        depth = 1.0 / self.true_disparity(cameras)
        return self.metric.apply(depth).to(images.device, torch.float32)

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
            g2 = torch.Generator().manual_seed(c.seed * 1_000_003 + int(face_ids[b]) + 7_919_000_017)
            u = torch.rand(2, generator=g, dtype=torch.float64)
            lo, hi = math.log(c.scale_range[0]), math.log(c.scale_range[1])
            scale = math.exp(lo + (hi - lo) * float(u[0]))
            shift = c.shift_range[0] + (c.shift_range[1] - c.shift_range[0]) * float(u[1])
            d = disparity[b].double().cpu()
            if c.edge_blur > 0:
                d = _gaussian_blur(d, c.edge_blur * S)
            curved = self._curve(d, g2)
            value = scale * curved + shift * _surface_median(curved)
            if c.warp_amplitude != 0.0:
                value = value * (1.0 + c.warp_amplitude * _smooth_field(g, c.warp_waves, c.warp_frequency, xx, yy))
            if c.noise_std != 0.0:
                noise = torch.randn(S, S, generator=g, dtype=torch.float64)
                value = value * (1.0 + c.noise_std * noise)
            if c.low_info_warp > 0 and c.low_info_sky is not None and _sky_fraction(d) >= c.low_info_sky:
                value = value * (1.0 + c.low_info_warp * _smooth_field(g2, c.warp_waves, 1.0, xx, yy))
            if c.infinity_distance is not None:
                value = torch.where(d < 1.0 / c.infinity_distance, torch.zeros_like(value), value)
            if c.additive_noise > 0:
                finite = value[torch.isfinite(value)]
                spread = float(torch.quantile(finite, 0.98) - torch.quantile(finite, 0.02)) if finite.numel() else 0.0
                value = value + c.additive_noise * spread * torch.randn(S, S, generator=g2, dtype=torch.float64)
            if int(face_ids[b]) in outliers:
                t = torch.rand(3, generator=g, dtype=torch.float64) * (2 * math.pi)
                field = torch.sin(2 * math.pi * (xx * torch.cos(t[0]) + yy * torch.sin(t[0])) + t[1])
                value = _surface_median(d) * (1.0 + 0.5 * field) * (0.5 + torch.rand(1, generator=g, dtype=torch.float64))
            out[b] = value.to(out)
        return out

    def _curve(self, d: Tensor, g: torch.Generator) -> Tensor:
        """The face's monotone non-affine disparity map (``curve_strength``); d: [S, S] float64."""
        c = self.corruption
        if c.curve_strength <= 0:
            return d
        k = c.curve_strength * (2.0 * float(torch.rand(1, generator=g, dtype=torch.float64)) - 1.0)
        top = d.max()
        if not bool(top > 0) or abs(k) < 1e-9:
            return d
        return top * torch.expm1(-k * d.clamp_min(0) / top) / math.expm1(-k)

    def predict(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        if cameras is None:
            return self._predict_full_frame(images)
        if images.shape[0] != cameras.num_faces or images.shape[-1] != cameras.size:
            raise ValueError(
                f"images {tuple(images.shape)} do not match {cameras.num_faces} cameras of size {cameras.size}"
            )
        out = self.corrupt(self.true_disparity(cameras), cameras.face_ids)
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



class MetricErrorConfig:
    """Error model of the synthetic predictor's metric mode: per view ``v`` (the v-th image of a call),

        metric depth = true depth x f_v x (1 + noise_std x n),   f_v log-uniform in ``scale_range``

    and ``outlier_views`` views (chosen by the seed) get ``f_v x outlier_factor`` (a metric network fooled by a
    mirror or a blank wall). ``view_fov_deg`` / ``view_size`` are the metric views it asks for.
    """

    def __init__(
        self,
        scale_range: Sequence[float] = (1.0, 1.0),
        noise_std: float = 0.0,
        outlier_views: int = 0,
        outlier_factor: float = 2.0,
        view_fov_deg: float = 60.0,
        view_size: int = 64,
        seed: int = 0,
    ):
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"metric.scale_range must satisfy 0 < lo <= hi, got {list(scale_range)}")
        self.noise_std = float(noise_std)
        self.outlier_views = int(outlier_views)
        self.outlier_factor = float(outlier_factor)
        if self.noise_std < 0 or self.outlier_views < 0 or self.outlier_factor <= 0:
            raise ValueError("metric: need noise_std >= 0, outlier_views >= 0 and outlier_factor > 0")
        self.view_fov_deg = float(view_fov_deg)
        self.view_size = int(view_size)
        self.seed = int(seed)

    def as_dict(self) -> dict:
        return {
            "scale_range": list(self.scale_range),
            "noise_std": self.noise_std,
            "outlier_views": self.outlier_views,
            "outlier_factor": self.outlier_factor,
            "view_fov_deg": self.view_fov_deg,
            "view_size": self.view_size,
            "seed": self.seed,
        }

    def factors(self, num_views: int) -> Tensor:
        """[V] float64 per-view factors ``f_v`` (outliers included)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7)
        lo, hi = math.log(self.scale_range[0]), math.log(self.scale_range[1])
        f = torch.exp(lo + (hi - lo) * torch.rand(num_views, generator=g, dtype=torch.float64))
        bad = torch.randperm(num_views, generator=g)[: self.outlier_views]
        f[bad] = f[bad] * self.outlier_factor
        return f

    def apply(self, depth: Tensor) -> Tensor:
        """depth [V, h, w] -> depth x per-view factor x (1 + noise); deterministic for a seed."""
        V = depth.shape[0]
        out = depth.double().cpu() * self.factors(V).view(-1, 1, 1)
        if self.noise_std:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 11)
            out = out * (1.0 + self.noise_std * torch.randn(out.shape, generator=g, dtype=torch.float64))
        return out.to(depth)
