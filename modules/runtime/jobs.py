"""What a batch worker does with each panorama, per mode: the pipeline it builds once, the files it writes.

Every mode that takes panoramas runs through the one batch runner (:mod:`modules.modes.batch`: folders, globs and
lists, resume, summary.json, staging and the completion marker, local or Ray); only these two steps differ:

* ``predict``: the tangent pipeline; distance / confidence / maps / point cloud / meta.json
  (:func:`~modules.export.outputs.write_panorama_outputs`).
* ``equirect``: the one-pass baseline (``mode.pad_fraction``, ``mode.fill_iterations``); the same files, meta.json
  ``method: equirect``.
* ``render_dense``: the tangent pipeline; the dense mesh files of ``export.dense`` plus the predict files.
* ``voxel``: the tangent pipeline; voxels.vox + voxels.npy (``mode.resolution`` ...) and meta.json.
* ``eval``: each (image, ground truth) pair of ``mode.dataset``: ``mode.pipeline`` with the paired ground truth handed
  to the predictor; predict's files, meta.json ``eval`` (:mod:`modules.runtime.eval_job`); the mode scores them after.
* ``single_view``: perspective photos (any aspect): the predictor on the whole photo; depth, point cloud, mesh files
  (:mod:`modules.runtime.single_view`).

The writers get the panorama's staging folder; meta.json (through :func:`~modules.export.outputs.write_meta`) is
written last and carries ``complete`` and ``fingerprint`` (the ``extra`` sections), so a resume can trust it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from ..export.outputs import faces_meta, write_meta, write_panorama_outputs
from ..pipeline import PipelineResult, build_equirect, build_pipeline

__all__ = ["PanoramaJob", "JOBS", "job_for", "dense_options", "write_voxel_files"]

log = logging.getLogger(__name__)

#: (out_dir, rgb [3, H, W], result, cfg, image_path, extra sections, input info) -> meta
Writer = Callable[[Path, torch.Tensor, PipelineResult, DictConfig, str, dict, dict], dict]


@dataclass(frozen=True)
class PanoramaJob:
    """One mode's work on a panorama: ``build(cfg, predictor)`` -> a pipeline (``.run(rgb, path)``,
    ``.predictor``), ``write`` (:data:`Writer`) its files; ``panorama``: inputs must be 2:1 equirectangular images
    (False: any photo, mode=single_view)."""

    name: str
    build: Callable[[DictConfig, Any], Any]
    write: Writer
    panorama: bool = True


def _write_predict(out, rgb, result, cfg, image_path, extra, input_info):
    return write_panorama_outputs(out, rgb, result, cfg, image_path, extra, input_info)


def _build_equirect(cfg: DictConfig, predictor=None):
    return build_equirect(cfg, predictor, pad_fraction=cfg.mode.pad_fraction, fill_iterations=cfg.mode.fill_iterations)


def _write_equirect(out, rgb, result, cfg, image_path, extra, input_info):
    return write_panorama_outputs(out, rgb, result, cfg, image_path, {**extra, "method": "equirect"}, input_info)


def dense_options(cfg: DictConfig) -> dict:
    """The export.dense groups as plain dicts (and export.axes) for :func:`export_dense_assets`."""
    d = OmegaConf.to_container(cfg.export.dense, resolve=True)
    return {**{k: d[k] for k in ("mesh", "files", "splats", "point_cloud", "previews")}, "axes": cfg.export.axes,
            "sky_dome": d.get("sky_dome")}


def _write_dense(out, rgb, result, cfg, image_path, extra, input_info):
    from ..export.dense import export_dense_assets
    from ..fusion.scale import Scale

    start = time.perf_counter()
    dense = export_dense_assets(result.distance.cpu(), rgb, out, result.confidence.cpu(),
                                scale=Scale(relative="keep"), **dense_options(cfg))  # the pipeline scaled it
    result.timings["dense_export"] = time.perf_counter() - start
    log.info("wrote %s", ", ".join(sorted(p.name for p in dense.files.values())))
    return write_panorama_outputs(out, rgb, result, cfg, image_path, {
        **extra, "dense": {"files": {k: v.name for k, v in dense.files.items()}, **dense.stats}}, input_info)


def write_voxel_files(out: Path, points: torch.Tensor, colours: torch.Tensor | None, v: DictConfig):
    """Voxelize ``points`` [N, 3] (``colours`` [N, 3] or None) with the options of mode=voxel ``v`` and write
    voxels.vox and voxels.npy into ``out``; returns the grid."""
    from ..export.voxel import voxelize_points, write_vox, write_voxel_npy

    bounds = None if v.bounds is None else torch.tensor(v.bounds, dtype=points.dtype)
    grid = voxelize_points(points, colours, resolution=int(v.resolution), bounds=bounds,
                           min_points=int(v.min_points), bounds_quantile=float(v.bounds_quantile))
    write_vox(out / "voxels.vox", grid, palette_method=v.palette_method, default_colour=tuple(v.default_colour))
    write_voxel_npy(out / "voxels.npy", grid, default_colour=tuple(v.default_colour))
    return grid


def _write_voxel(out, rgb, result, cfg, image_path, extra, input_info):
    from ..export.pointcloud import erp_points

    start = time.perf_counter()
    points, colours = erp_points(result.distance.cpu(), rgb, int(cfg.mode.stride))
    grid = write_voxel_files(out, points, colours, cfg.mode)
    timings = {**result.timings, "voxels": time.perf_counter() - start}
    extra = dict(extra)
    predictor = extra.pop("predictor", None)
    return write_meta(out, cfg, input={"image_path": image_path, "height": int(rgb.shape[1]),
                                       "width": int(rgb.shape[2]), **(input_info or {})},
                      timings=timings, scale=result.info.get("scale"), predictor=predictor, voxels=grid.describe(),
                      faces=faces_meta(result), **extra)


def _build_eval(cfg: DictConfig, predictor=None):
    from .eval_job import EvalPipeline

    return EvalPipeline(cfg, predictor)


def _write_eval(out, rgb, result, cfg, image_path, extra, input_info):
    from .eval_job import write_eval

    return write_eval(out, rgb, result, cfg, image_path, extra, input_info)


def _build_single_view(cfg: DictConfig, predictor=None):
    from .single_view import SingleViewPipeline

    return SingleViewPipeline(cfg, predictor)


def _write_single_view(out, rgb, result, cfg, image_path, extra, input_info):
    from .single_view import write_single_view

    return write_single_view(out, rgb, result, cfg, image_path, extra, input_info)


JOBS: dict[str, PanoramaJob] = {
    "predict": PanoramaJob("predict", build_pipeline, _write_predict),
    "equirect": PanoramaJob("equirect", _build_equirect, _write_equirect),
    "render_dense": PanoramaJob("render_dense", build_pipeline, _write_dense),
    "voxel": PanoramaJob("voxel", build_pipeline, _write_voxel),
    "eval": PanoramaJob("eval", _build_eval, _write_eval),
    "single_view": PanoramaJob("single_view", _build_single_view, _write_single_view, panorama=False),
}


def job_for(cfg: DictConfig) -> PanoramaJob:
    """The job of ``cfg.mode.name`` (modes without one of their own, e.g. video, use predict's)."""
    return JOBS.get(str(cfg.mode.get("name", "predict")), JOBS["predict"])
