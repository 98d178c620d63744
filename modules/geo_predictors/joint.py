"""Joint predictor (``predictor=joint``, the default of ``mode=predict``): MiDaS v3.1 and Depth Anything V2 on every
face, fused per face.

Per face (all faces batched):

1. Both networks give relative disparity: ``m`` (MiDaS) and ``d`` (Depth Anything V2), [B, h, w].
2. ``m`` is aligned to ``d`` by robust least squares, ``a = s * m + t`` per face: iteratively reweighted least
   squares from the plain least-squares fit, with Tukey biweights (or Huber weights); residuals are measured in
   units of ``sigma = 1.4826 * median|r|`` (the MAD estimate of a Gaussian sigma), and those beyond
   ``robust_threshold`` sigmas are dropped (Tukey) or down-weighted (Huber). ``s`` is kept at or above
   ``min_scale`` (a negative scale would turn near into far).
3. Per-pixel agreement ``g = exp(-0.5 * (|a - d| / (agreement_sigma * median|d|))^2)`` in (0, 1]: the relative
   disagreement of the two networks, measured against the face's typical disparity.
4. Combination: ``(w_d * d + w_m * g^p * a) / (w_d + w_m * g^p)`` with ``w_m = midas_weight``,
   ``w_d = depth_anything_weight`` and ``p = agreement_gating``: where the networks disagree, MiDaS's share fades
   and Depth Anything (the reference the fit aligns to) decides; ``p = 0`` gives a fixed weighted mean.
5. Confidence = ``g``: the alignment stage uses it to weight pixels.

The result is in Depth Anything's disparity scale (still relative: unknown scale and shift per face).

Optional ``metric`` member (``predictor=joint_metric``): a metric predictor (Depth Pro, a Depth Anything V2 metric
variant) that gives no shape, only the panorama's metric scale (``scale.method=network`` / ``auto``): the pipeline
runs it on its own metric views (``modules/fusion/metric_scale.py``). Under ``scale.method=auto`` a member whose
weights are not on this machine is left out (:func:`instantiate_predictor`), never downloaded, and the reason is
recorded in meta.json.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..geometry.tangent import TangentCameras
from ..robust import MAD_TO_SIGMA, ROBUST_LOSSES, robust_weights
from .base import DepthPredictor
from .errors import PredictorConfigError, WeightsNotFoundError

__all__ = [
    "ROBUST_LOSSES", "JointPredictor", "agreement", "instantiate_predictor", "robust_scale_shift", "weighted_scale_shift",
]



def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def weighted_scale_shift(
    source: Tensor, target: Tensor, weight: Tensor, min_scale: float | None = None, eps: float = 1e-12
) -> tuple[Tensor, Tensor]:
    """Weighted least squares ``min_{s,t} sum w (s * source + t - target)^2`` per row.

    Args:
        source, target, weight: [B, N] (weight >= 0; zero for pixels to ignore).
        min_scale: lower bound of ``s`` (the shift is re-solved for the clamped scale); ``None`` for none.
        eps: a row whose weighted variance of ``source`` is at most ``eps`` (a constant map) gets ``s = 0`` and
            ``t`` = the weighted mean of ``target``.
    Returns:
        scale [B], shift [B].
    """
    w_sum = weight.sum(dim=1).clamp_min(torch.finfo(weight.dtype).tiny)
    mean_x = (weight * source).sum(dim=1) / w_sum
    mean_y = (weight * target).sum(dim=1) / w_sum
    dx = source - mean_x[:, None]
    var_x = (weight * dx * dx).sum(dim=1) / w_sum
    cov = (weight * dx * (target - mean_y[:, None])).sum(dim=1) / w_sum
    scale = torch.where(var_x > eps, cov / var_x.clamp_min(torch.finfo(var_x.dtype).tiny), torch.zeros_like(cov))
    if min_scale is not None:
        scale = scale.clamp_min(min_scale)
    return scale, mean_y - scale * mean_x


def _masked_median(values: Tensor, valid: Tensor) -> Tensor:
    """Median of ``values`` [B, N] over the ``valid`` [B, N] entries of each row; [B] (nan for an empty row)."""
    return torch.where(valid, values, torch.full_like(values, float("nan"))).nanmedian(dim=1).values




def robust_scale_shift(
    source: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    iterations: int = 5,
    loss: str = "tukey",
    threshold: float = 4.685,
    min_scale: float | None = 0.0,
) -> tuple[Tensor, Tensor]:
    """Robust scale and shift aligning ``source`` to ``target`` per image (IRLS from the least-squares fit).

    Args:
        source, target: [B, ...] maps (flattened per image).
        valid: [B, ...] bool mask of pixels to use; default all (non-finite pixels are never used).
        iterations: reweighting rounds after the plain least-squares start (0 = ordinary least squares).
        loss: ``tukey`` (biweight: residuals beyond the threshold get weight 0) or ``huber`` (weight
            ``threshold * sigma / |r|`` beyond it).
        threshold: in units of ``sigma = 1.4826 * median|r|``; 4.685 (Tukey) and 1.345 (Huber) give 95 %
            efficiency on Gaussian residuals.
        min_scale: lower bound of the scale; ``None`` for none.
    Returns:
        scale [B], shift [B] (dtype of ``source``) such that ``scale * source + shift ~ target``.
    """
    if source.shape != target.shape or source.ndim < 2:
        raise ValueError(
            f"source and target must share a [B, ...] shape, got {tuple(source.shape)}, {tuple(target.shape)}"
        )
    if iterations < 0 or threshold <= 0 or loss not in ROBUST_LOSSES:
        raise ValueError(
            f"need iterations >= 0, threshold > 0, loss in {ROBUST_LOSSES}; got {iterations}, {threshold}, {loss!r}"
        )
    x, y = _flat(source), _flat(target)
    ok = torch.isfinite(x) & torch.isfinite(y)
    if valid is not None:
        ok = ok & _flat(valid).bool()
    x = torch.where(ok, x, torch.zeros_like(x))
    y = torch.where(ok, y, torch.zeros_like(y))
    weight = ok.to(x.dtype)
    scale, shift = weighted_scale_shift(x, y, weight, min_scale)
    for _ in range(iterations):
        residual = (scale[:, None] * x + shift[:, None] - y).abs()
        sigma = MAD_TO_SIGMA * _masked_median(residual, ok)
        limit = (threshold * sigma).nan_to_num(0.0)[:, None]
        new = ok.to(x.dtype) * robust_weights(residual, limit, loss)
        # keep the previous weights where the fit is already exact (sigma = 0) or nothing would be left
        keep = (limit <= 0) | (new.sum(dim=1, keepdim=True) <= 0)
        weight = torch.where(keep, weight, new)
        scale, shift = weighted_scale_shift(x, y, weight, min_scale)
    return scale, shift


def agreement(aligned: Tensor, reference: Tensor, sigma: float, eps: float = 1e-6) -> Tensor:
    """Per-pixel agreement ``exp(-0.5 * (|aligned - reference| / (sigma * median|reference|))^2)``.

    Args:
        aligned, reference: [B, h, w] disparities in the same scale.
        sigma: relative disagreement (fraction of the face's median |disparity|) at which agreement is exp(-1/2).
        eps: floor of the per-face normaliser, relative to the face's largest |disparity| (or absolute if all 0).
    Returns:
        [B, h, w] in [0, 1]; 0 where either input is not finite.
    """
    if sigma <= 0:
        raise ValueError(f"agreement_sigma must be positive, got {sigma}")
    ref = _flat(reference)
    finite = torch.isfinite(_flat(aligned)) & torch.isfinite(ref)
    typical = _masked_median(ref.abs(), finite).nan_to_num(0.0)
    peak = torch.where(finite, ref.abs(), torch.zeros_like(ref)).amax(dim=1)
    norm = torch.maximum(typical, eps * torch.maximum(peak, torch.ones_like(peak)))
    err = (aligned - reference).abs() / (sigma * norm.view(-1, *([1] * (reference.ndim - 1))))
    out = torch.exp(-0.5 * err * err)
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


class JointPredictor(DepthPredictor):
    """MiDaS v3.1 + Depth Anything V2 on every face, fused per face (module header).

    Args:
        midas, depth_anything: the two predictors (built by Hydra from the nested configs), or their configs
            (mappings with ``_target_``), instantiated here.
        midas_weight, depth_anything_weight: combination weights (>= 0, not both 0).
        robust_iterations, robust_loss, robust_threshold, min_scale: the robust alignment
            (:func:`robust_scale_shift`).
        fit_max_pixels: the alignment is fitted on a regular subsample of at most this many pixels per face.
        agreement_sigma: relative disagreement scale of the agreement term (:func:`agreement`).
        agreement_gating: exponent ``p`` of the agreement in MiDaS's per-pixel weight (0 disables gating).
        metric: optional metric predictor (or its config) used only as the scale source (module header).
    """

    def __init__(
        self,
        midas: DepthPredictor | Mapping[str, Any],
        depth_anything: DepthPredictor | Mapping[str, Any],
        midas_weight: float = 0.5,
        depth_anything_weight: float = 0.5,
        robust_iterations: int = 5,
        robust_loss: str = "tukey",
        robust_threshold: float = 4.685,
        min_scale: float | None = 0.0,
        fit_max_pixels: int = 65536,
        agreement_sigma: float = 0.1,
        agreement_gating: float = 1.0,
        metric: DepthPredictor | Mapping[str, Any] | None = None,
    ) -> None:
        self.midas = _as_predictor(midas, "midas")
        self.depth_anything = _as_predictor(depth_anything, "depth_anything")
        self.metric: DepthPredictor | None = None
        #: why there is no metric member although one was configured (set by instantiate_predictor)
        self.metric_unavailable: str | None = None
        if metric is not None:
            self.set_metric(_as_predictor(metric, "metric"))
        if midas_weight < 0 or depth_anything_weight < 0 or midas_weight + depth_anything_weight <= 0:
            raise PredictorConfigError(
                f"joint predictor weights must be >= 0 and not both 0, got midas_weight={midas_weight}, "
                f"depth_anything_weight={depth_anything_weight}"
            )
        if agreement_sigma <= 0 or agreement_gating < 0:
            raise PredictorConfigError(
                f"agreement_sigma must be > 0 and agreement_gating >= 0, got {agreement_sigma}, {agreement_gating}"
            )
        if int(robust_iterations) < 0 or robust_threshold <= 0 or robust_loss not in ROBUST_LOSSES:
            raise PredictorConfigError(
                f"need robust_iterations >= 0, robust_threshold > 0, robust_loss in {ROBUST_LOSSES}; got "
                f"{robust_iterations}, {robust_threshold}, {robust_loss!r}"
            )
        self.midas_weight = float(midas_weight)
        self.depth_anything_weight = float(depth_anything_weight)
        self.robust_iterations = int(robust_iterations)
        self.robust_loss = robust_loss
        self.robust_threshold = float(robust_threshold)
        self.min_scale = None if min_scale is None else float(min_scale)
        if int(fit_max_pixels) < 1:
            raise PredictorConfigError(f"fit_max_pixels must be >= 1, got {fit_max_pixels}")
        self.fit_max_pixels = int(fit_max_pixels)
        self.agreement_sigma = float(agreement_sigma)
        self.agreement_gating = float(agreement_gating)
        #: per-face alignment of the last call: {"scale": [B], "shift": [B]} (for diagnostics)
        self.last_alignment: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.midas.device

    def set_metric(self, metric: DepthPredictor | None, unavailable: str | None = None) -> None:
        """Set the metric member (``None`` with the reason when its weights are missing under ``auto``)."""
        if metric is not None and not metric.is_metric:
            raise PredictorConfigError(
                f"joint predictor: 'metric' must be a metric predictor (depth_pro, a depth_anything_v2 metric_* "
                f"variant); {metric.describe().get('name')} variant {metric.describe().get('variant')} is relative"
            )
        self.metric, self.metric_unavailable = metric, unavailable

    def metric_source(self) -> DepthPredictor | None:
        return self.metric

    def begin_panorama(self, image_path: str | None, erp_hw: tuple[int, int]) -> None:
        self.midas.begin_panorama(image_path, erp_hw)
        self.depth_anything.begin_panorama(image_path, erp_hw)
        if self.metric is not None:
            self.metric.begin_panorama(image_path, erp_hw)

    def fuse(self, midas_disparity: Tensor, depth_anything_disparity: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 2-5 of the module header on given disparities.

        Args:
            midas_disparity, depth_anything_disparity: [B, h, w].
        Returns:
            disparity [B, h, w] (Depth Anything's scale), confidence [B, h, w] in [0, 1].
        """
        if midas_disparity.shape != depth_anything_disparity.shape or midas_disparity.ndim != 3:
            raise ValueError(
                f"disparities must both be [B, h, w], got {tuple(midas_disparity.shape)} and "
                f"{tuple(depth_anything_disparity.shape)}"
            )
        m = midas_disparity.float()
        d = depth_anything_disparity.float()
        if m.shape[0] == 0:
            self.last_alignment = {"scale": m.new_zeros(0), "shift": m.new_zeros(0)}
            return d.clone(), torch.ones_like(d)
        # the fit uses a regular subsample of at most fit_max_pixels pixels per face
        step = -(-m[0].numel() // self.fit_max_pixels)
        scale, shift = robust_scale_shift(
            _flat(m)[:, ::step],
            _flat(d)[:, ::step],
            None,
            self.robust_iterations,
            self.robust_loss,
            self.robust_threshold,
            self.min_scale,
        )
        aligned = scale[:, None, None] * m + shift[:, None, None]
        conf = agreement(aligned, d, self.agreement_sigma)
        if self.agreement_gating > 0:
            w_m = self.midas_weight * conf.pow(self.agreement_gating)
        else:
            w_m = torch.full_like(conf, self.midas_weight)
        w_d = self.depth_anything_weight
        fused = (w_d * d + w_m * aligned) / (w_d + w_m).clamp_min(1e-12)
        # a pixel one network could not predict falls back to the other
        fused = torch.where(torch.isfinite(aligned), fused, d)
        fused = torch.where(torch.isfinite(d), fused, aligned)
        self.last_alignment = {"scale": scale.detach(), "shift": shift.detach()}
        return fused, conf

    def predict_with_confidence(self, images: Tensor, cameras: TangentCameras | None = None) -> tuple[Tensor, Tensor]:
        """Fused disparity [B, h, w] and agreement confidence [B, h, w], float32 on ``images.device``."""
        m = self.midas.predict(images, cameras)
        d = self.depth_anything.predict(images, cameras)
        return self.fuse(m, d)

    def predict(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        return self.predict_with_confidence(images, cameras)[0]

    def describe(self) -> dict[str, Any]:
        parts = {"midas": self.midas.describe(), "depth_anything": self.depth_anything.describe()}
        licences = [p.get("licence") for p in parts.values() if p.get("licence")]
        out: dict[str, Any] = {
            "name": "joint",
            "class": type(self).__name__,
            **parts,
            "licence": " + ".join(dict.fromkeys(licences)) if licences else None,
            "midas_weight": self.midas_weight,
            "depth_anything_weight": self.depth_anything_weight,
            "robust_iterations": self.robust_iterations,
            "robust_loss": self.robust_loss,
            "robust_threshold": self.robust_threshold,
            "min_scale": self.min_scale,
            "fit_max_pixels": self.fit_max_pixels,
            "agreement_sigma": self.agreement_sigma,
            "agreement_gating": self.agreement_gating,
            "random_weights": any(p.get("random_weights", False) for p in parts.values()),
        }
        if self.metric is not None:
            out["metric"] = self.metric.describe()
            out["random_weights"] = out["random_weights"] or bool(out["metric"].get("random_weights"))
            if out["metric"].get("allow_random_weights"):
                out["allow_random_weights"] = True
        elif self.metric_unavailable:
            out["metric"] = {"unavailable": self.metric_unavailable}
        if any(p.get("allow_random_weights") for p in parts.values()):
            out["allow_random_weights"] = True
        return out


def instantiate_predictor(config: Mapping[str, Any], scale_method: str | None = "auto") -> DepthPredictor:
    """Build a predictor from its config (``_target_``) as Hydra would, except that under ``scale.method=auto`` a
    ``metric`` member (``predictor=joint_metric``) whose weights are not on this machine is left out: it is looked
    for without downloading, and on :class:`WeightsNotFoundError` the predictor runs without it and records why
    (``metric_unavailable``; meta.json). Any other method builds everything as configured (missing weights fail).
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    metric_cfg = config.get("metric") if isinstance(config, Mapping) or hasattr(config, "get") else None
    if (scale_method or "auto") != "auto" or not metric_cfg or "_target_" not in metric_cfg:
        return instantiate(config)
    rest = OmegaConf.create(OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config))
    rest.metric = None
    predictor = instantiate(rest)
    if not hasattr(predictor, "set_metric"):
        return instantiate(config)
    kwargs = {"allow_download": False} if "allow_download" in metric_cfg else {}
    try:
        metric = instantiate(metric_cfg, **kwargs)
    except Exception as exc:  # Hydra wraps the constructor's error in an InstantiationException
        err = exc if isinstance(exc, WeightsNotFoundError) else exc.__cause__
        if not isinstance(err, WeightsNotFoundError):
            raise
        lines = str(err).splitlines()
        fetch = next((ln.split("with:", 1)[-1].strip() for ln in lines if "tools.download_checkpoints" in ln), "")
        predictor.set_metric(None, f"{lines[0]} scale.method=auto does not download; get them with: {fetch}")
        return predictor
    predictor.set_metric(metric)
    return predictor


def _as_predictor(obj: DepthPredictor | Mapping[str, Any], name: str) -> DepthPredictor:
    if isinstance(obj, DepthPredictor):
        return obj
    if isinstance(obj, Mapping) and "_target_" in obj:
        from hydra.utils import instantiate

        built = instantiate(obj)
        if isinstance(built, DepthPredictor):
            return built
    raise TypeError(
        f"joint predictor: '{name}' must be a DepthPredictor or a config with _target_, got {type(obj).__name__}"
    )
