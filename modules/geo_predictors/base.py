"""The one interface every depth predictor implements.

A predictor maps a batch of RGB images to *relative disparity*: ``1 / depth`` (depth = z in the image's
perspective camera) up to an unknown positive scale and shift per image, as MiDaS and Depth Anything output.
Larger values are nearer. Faces are passed all at once; a predictor chunks them itself (``batch_size``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..geometry.tangent import TangentCameras

__all__ = ["DepthPredictor", "MetricView"]


@dataclass(frozen=True)
class MetricView:
    """The square views a metric predictor measures the scale on (``modules/fusion/metric_scale.py``).

    ``fov_deg``: full field of view; ``size``: pixels per side; ``max_depth``: the largest depth the network can
    output (metres; ``None``: unbounded), near which its output is saturated.
    """

    fov_deg: float
    size: int
    max_depth: float | None = None


class DepthPredictor(abc.ABC):
    """Relative-disparity predictor.

    Subclasses implement :meth:`predict`; they may override :meth:`predict_with_confidence` when they can tell
    how much to trust each pixel, :meth:`begin_panorama` when they need to know which panorama the faces come
    from, and :meth:`describe` for what goes into meta.json (weights, licence, random-weight use).
    """

    #: whether this predictor's time counts as network time in the stage timings
    is_network: bool = True

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device the model runs on; inputs are moved there, outputs come back on the caller's device."""

    def begin_panorama(self, image_path: str | None, erp_hw: tuple[int, int]) -> None:
        """Called once before the faces of one panorama; ``erp_hw`` is the panorama's (H, W)."""

    def use_ground_truth(self, image_path: str, distance: Tensor, source: str) -> None:
        """mode=eval hands over the ground truth it paired with ``image_path`` (``distance`` [H, W] metres, +inf sky,
        NaN invalid; read from ``source``) before predicting it. Networks ignore it; the ground-truth-backed
        synthetic predictor renders from it."""

    @abc.abstractmethod
    def predict(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        """Relative disparity of each image.

        Args:
            images: [B, 3, h, w] float RGB in [0, 1], any device.
            cameras: the B images' face cameras when they come from a panorama (the synthetic predictor needs
                them; networks ignore them).
        Returns:
            [B, h, w] disparity on ``images.device``, float32.
        """

    def predict_with_confidence(self, images: Tensor, cameras: TangentCameras | None = None) -> tuple[Tensor, Tensor]:
        """Disparity [B, h, w] and a per-pixel confidence [B, h, w] in [0, 1] (ones unless overridden)."""
        disparity = self.predict(images, cameras)
        return disparity, torch.ones_like(disparity)

    def describe(self) -> dict[str, Any]:
        """What meta.json records about this predictor."""
        return {"name": type(self).__name__}

    # ------------------------------------------------------------------ metric depth (optional capability)
    @property
    def is_metric(self) -> bool:
        """Whether :meth:`predict_metric_depth` gives metres (metric networks, the synthetic metric mode)."""
        return False

    def metric_source(self) -> "DepthPredictor | None":
        """The predictor that gives this one's metric depth (itself, or a member such as ``joint``'s ``metric``);
        ``None`` when there is none (the scale then comes from elsewhere, see ``scale.method``)."""
        return self if self.is_metric else None

    def metric_view(self) -> MetricView:
        """The square views the metric scale is measured on."""
        raise NotImplementedError(f"{type(self).__name__} gives no metric depth")

    def predict_metric_depth(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        """Metric depth (metres, z in each image's camera) [B, h, w] of images [B, 3, h, w] seen by ``cameras``."""
        raise NotImplementedError(f"{type(self).__name__} gives no metric depth")
