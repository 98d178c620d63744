"""A 360 video end to end: every frame through the pipeline, then a consistency pass over time, then the files.

Flow (``mode=video``, :func:`run_video`):

1. Frames: ``dataset.image_path`` is a video file or a folder / glob / list of frame images
   (:mod:`modules.dataset.video`); ``video.frames`` picks the range, rate and stride.
2. Per frame, independently: one :class:`~modules.runtime.worker.PanoramaTask` per frame on the executor
   ``runtime.executor`` builds (``local``: this process; ``ray``: Ray actors, the frames spread over them), the same
   workers and scheduling as a batch of panoramas. Each worker decodes its frames itself (a video stays open, so
   in-order frames are one forward decode; never the whole clip in memory) and writes the frame's raw result
   (distance and confidence at the frame's own scale) all-or-nothing into ``raw/NNNNNN/`` with a fingerprint
   (config + input file + frame). With ``video.resume`` a rerun into the same ``video.output_dir`` reuses every
   finished frame: an interruption costs at most the frames in flight. A frame that cannot be decoded or fails is
   reported (summary.json, the table, meta.json) and the clip goes on without it.
3. Consistency, on the driver (:mod:`modules.fusion.temporal`), streaming over the raw frames: each frame is
   registered (similarity: rotation, translation, scale) to up to ``video.consistency.window`` previous frames at
   ``align_height`` rows; the per-frame scales are solved jointly; the flicker metric is measured on the raw frames
   (what an unrelated batch gives) and on the consistent ones, printed and written.
4. Files, streaming again: ``distance/NNNNNN.png`` (16-bit, one unit for the whole clip), ``confidence/NNNNNN.png``
   (16-bit, value / 65535), the colour-mapped ``depth.mp4`` (clip-wide colour bounds; a failed frame is black),
   optional point clouds / meshes every n-th frame, and last ``meta.json`` (per frame: status, time, scale,
   motion, pose, timings; the flicker metric; speed) and ``summary.json``.

Exit code: as a batch (0 all frames done, 1 some frame failed, 130 / 143 interrupted).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..config import to_container
from ..dataset.video import VideoSource, frame_path, open_source, select_frames
from ..errors import UserError
from ..export.depth_files import write_distance_png, write_json
from ..export.video import DepthVideoWriter, colorize_fixed, read_frame_raw, write_confidence_png
from ..fusion.temporal import align_symmetric, compose, downsample_distance, drop_far, flicker, solve_scales
from . import build_executor, executor_name
from .fingerprint import config_fingerprint_document, input_fingerprint, panorama_fingerprint
from .staging import is_complete, read_marker, remove_stale_staging
from .summary import build_summary, format_table
from .worker import FAILED, NOT_RUN, OK, SKIPPED, PanoramaTask, TaskResult

__all__ = ["run_video", "make_frame_tasks", "consistency_pass", "FrameTrack", "META_FILE", "SUMMARY_FILE"]

log = logging.getLogger(__name__)

META_FILE = "meta.json"
SUMMARY_FILE = "summary.json"
RAW_DIR = "raw"


def make_frame_tasks(cfg: DictConfig, source: VideoSource, frames: list[int], out_dir: Path) -> list[PanoramaTask]:
    """One task per selected frame: ``<file>#frame=N`` -> ``out_dir/raw/NNNNNN`` with its fingerprint."""
    fp = cfg.batch.fingerprint
    config_doc = config_fingerprint_document(cfg, fp.sections, fp.ignore_keys)
    docs: dict[str, dict] = {}
    tasks = []
    for k, f in enumerate(frames):
        file = source.file_of(f)
        if file not in docs:
            docs[file] = input_fingerprint(file, str(fp.input))
        input_doc = {**docs[file], "frame": f}
        name = f"{f:06d}"
        tasks.append(PanoramaTask(index=k, image_path=frame_path(file, f), name=name,
                                  output_dir=str(out_dir / RAW_DIR / name), into_existing=False,
                                  fingerprint=panorama_fingerprint(config_doc, input_doc), input_fingerprint=input_doc,
                                  outputs="video_frame"))
    return tasks


@dataclass
class FrameTrack:
    """What the consistency pass knows of one processed frame."""

    index: int
    frame: int
    folder: Path
    log_scale: float = 0.0
    motion: dict | None = None  # registration onto the previous processed frame (raw units)
    motion_tuple: tuple | None = None  # the same as (R, T, log_scale) tensors
    pairs: list = field(default_factory=list)
    raw_max: float = 0.0
    inv_percentiles: tuple[float, float] = (0.0, 1.0)
    flicker_raw: float | None = None
    flicker: float | None = None
    pose: list | None = None  # R_world_from_cam | position (output units), world = the first frame's camera


def _small(folder: Path, height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    distance, confidence = read_frame_raw(folder)
    small = downsample_distance(distance, height)
    conf = torch.nn.functional.adaptive_avg_pool2d(confidence[None, None], small.shape)[0, 0]
    return distance, small, conf


def consistency_pass(tracks: list[FrameTrack], c: DictConfig, percentiles: tuple[float, float],
                     progress: bool = False) -> dict:
    """Register the frames, solve their scales, measure flicker (module docstring, step 3); fills ``tracks``.

    Returns a description for meta.json (pairs used, flicker before and after).
    """
    h = int(c.align_height)
    window = int(c.window)
    opts = dict(iterations=int(c.iterations), cauchy_k=float(c.cauchy_k), min_cauchy=float(c.min_cauchy),
                static_threshold=float(c.static_threshold), far_ratio=float(c.far_ratio))
    recent: deque = deque(maxlen=max(window, 1))  # (position in tracks, small map)
    pairs: list[tuple[int, int, float, float]] = []
    bar = tqdm(total=len(tracks), unit="frame", desc="consistency", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    start = time.perf_counter()
    prev_motion = None
    for i, t in enumerate(tracks):
        distance, small, conf = _small(t.folder, h)
        near = drop_far(distance, float(c.far_ratio))  # the sky does not set the PNG unit (it is clipped)
        t.raw_max = float(near.max())
        small_near = drop_far(small, float(c.far_ratio))
        inv = 1.0 / small_near[small_near > 0]
        lo, hi = np.percentile(inv.numpy(), percentiles)
        t.inv_percentiles = (float(lo), float(hi))
        chain = None  # similarity from this frame into the k-th previous one
        for k, (j, dst, dst_conf) in enumerate(reversed(recent), start=1):
            if k == 1:
                a = align_symmetric(small, dst, conf, dst_conf, init=prev_motion, **opts)
                chain = (a.R, a.T, a.log_scale)
                t.motion = a.as_dict()
                prev_motion = chain
            else:
                nxt = tracks[j + 1].motion_tuple
                init = compose(chain, nxt) if nxt is not None else chain
                a = align_symmetric(small, dst, conf, dst_conf, init=init, yaw_search=False, **opts)
                chain = (a.R, a.T, a.log_scale)
            t.pairs.append({"to": tracks[j].frame, "log_scale": a.log_scale, "inlier_fraction": a.inlier_fraction,
                            "residual": a.residual, "init": a.init, **a.info})
            if a.inlier_fraction >= float(c.min_inlier_fraction):
                pairs.append((i, j, a.log_scale, a.inlier_fraction))
        if t.motion is not None:
            t.motion_tuple = (torch.tensor(t.motion["R"], dtype=torch.float64),
                              torch.tensor(t.motion["T"], dtype=torch.float64), t.motion["log_scale"])
        recent.append((i, small, conf))
        bar.update(1)
    bar.close()
    x = solve_scales(len(tracks), pairs, float(c.anchor_frames)) if c.enabled else np.zeros(len(tracks))
    for t, xi in zip(tracks, x):
        t.log_scale = float(xi)
    _measure_flicker(tracks, int(c.flicker_height), float(c.static_threshold), float(c.far_ratio))
    _chain_poses(tracks)
    raw = [t.flicker_raw for t in tracks if t.flicker_raw is not None]
    out = [t.flicker for t in tracks if t.flicker is not None]
    summary = {
        "definition": "median over consecutive frame pairs of the solid-angle weighted median |relative change of "
                      "distance| after the estimated rigid motion, over pixels changing by less than "
                      f"{float(c.static_threshold)} (static), at {int(c.flicker_height)} rows",
        "batch": float(np.median(raw)) if raw else None,
        "consistent": float(np.median(out)) if out else None,
        "pairs_measured": len(out),
    }
    if summary["batch"] and summary["consistent"]:
        summary["reduction"] = summary["batch"] / max(summary["consistent"], 1e-12)
    return {"flicker": summary, "pairs_used": len(pairs), "seconds": time.perf_counter() - start,
            "enabled": bool(c.enabled)}


def _measure_flicker(tracks: list[FrameTrack], h: int, threshold: float, far_ratio: float) -> None:
    """Flicker of consecutive processed frames, raw (each its own scale) and scaled, with the estimated motion.

    Frame i's motion maps it into frame i-1: X_{i-1} = sigma R X_i + T in raw units. Rigidly, raw: (R, T); scaled by
    s: X'_{i-1} = s_{i-1} X_{i-1}, so the rigid motion between the scaled maps is (R, s_{i-1} T)."""
    prev = None
    for t in tracks:
        small = downsample_distance(read_frame_raw(t.folder)[0], h)
        if prev is not None and t.motion is not None:
            p_track, p_small = prev
            R = torch.tensor(t.motion["R"], dtype=torch.float64)
            T = torch.tensor(t.motion["T"], dtype=torch.float64)
            t.flicker_raw = flicker(small, p_small, R, T, threshold, far_ratio)["median"]
            s, sp = math.exp(t.log_scale), math.exp(p_track.log_scale)
            t.flicker = flicker(small * s, p_small * sp, R, sp * T, threshold, far_ratio)["median"]
        prev = (t, small)


def _chain_poses(tracks: list[FrameTrack]) -> None:
    """Camera poses in the first frame's camera (output units) by chaining the consecutive motions."""
    R_w = torch.eye(3, dtype=torch.float64)
    c_w = torch.zeros(3, dtype=torch.float64)
    for i, t in enumerate(tracks):
        if i > 0:
            if t.motion is None:
                break  # no motion estimate: the trajectory stops here
            R = torch.tensor(t.motion["R"], dtype=torch.float64)
            T = torch.tensor(t.motion["T"], dtype=torch.float64) * math.exp(tracks[i - 1].log_scale)
            # X_prev = R X_t + T  ->  world = R_w X_prev + c_w = (R_w R) X_t + (R_w T + c_w)
            R_w, c_w = R_w @ R, R_w @ T + c_w
        t.pose = {"R_world_from_cam": R_w.tolist(), "position": c_w.tolist()}


def _progress_run(executor, cfg, todo, results: dict, total: int, progress: bool) -> str | None:
    bar = tqdm(total=total, initial=len(results), unit="frame", desc="frames", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    failures = 0

    def on_result(result: TaskResult) -> None:
        nonlocal failures
        results[result.index] = result
        failures += result.status == FAILED
        bar.set_postfix(failed=failures, refresh=False)
        bar.update(1)

    try:
        executor(cfg, todo, on_result, False)
        return None
    except KeyboardInterrupt:
        log.error("interrupted: finished frames are kept in raw/ (rerun into the same folder to resume)")
        return "SIGINT"
    finally:
        bar.close()


def run_video(cfg: DictConfig) -> int:
    """mode=video (module docstring). Returns the exit code."""
    v = cfg.video
    fr = v.frames
    out_dir = Path(str(v.output_dir)).absolute()
    source = open_source(str(cfg.dataset.image_path), float(fr.image_fps), list(fr.extensions),
                         int(cfg.dataset.min_height))
    frames = select_frames(source.num_frames, source.fps, int(fr.start), None if fr.end is None else int(fr.end),
                           int(fr.stride), None if fr.target_fps is None else float(fr.target_fps))
    log.info("%s: %d of %d frames (%dx%d, %.3g fps) -> %s", source.path, len(frames), source.num_frames,
             source.width, source.height, source.fps, out_dir)
    tasks = make_frame_tasks(cfg, source, frames, out_dir)
    (out_dir / RAW_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir / RAW_DIR)
    results: dict[int, TaskResult] = {}
    todo = []
    for t in tasks:
        if bool(v.resume) and is_complete(t.output_dir, t.fingerprint):
            results[t.index] = TaskResult(t.index, t.name, t.image_path, t.output_dir, SKIPPED)
        else:
            todo.append(t)
    if results:
        log.info("resuming: %d of %d frames are already done", len(results), len(tasks))
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    start = time.perf_counter()
    interrupted = _progress_run(build_executor(cfg.runtime), resolved, todo, results,
                                len(tasks), bool(v.progress))
    frames_seconds = time.perf_counter() - start
    for t in tasks:
        if t.index not in results:
            results[t.index] = TaskResult(t.index, t.name, t.image_path, t.output_dir, NOT_RUN,
                                          reason="interrupted")
    ordered = [results[t.index] for t in tasks]
    executor_info = {"runtime": executor_name(cfg.runtime)}
    if interrupted:
        summary = build_summary(ordered, executor_info, frames_seconds, interrupted, source.path, str(out_dir))
        write_json(out_dir / SUMMARY_FILE, summary)
        return summary["exit_code"]
    tracks = [FrameTrack(index=t.index, frame=frames[t.index], folder=Path(t.output_dir))
              for t, r in zip(tasks, ordered) if r.status in (OK, SKIPPED)]
    if not tracks:
        summary = build_summary(ordered, executor_info, frames_seconds, None, source.path, str(out_dir))
        write_json(out_dir / SUMMARY_FILE, summary)
        print(format_table(ordered, 0), flush=True)
        raise UserError(f"{source.path}: no frame could be processed")
    consistency = consistency_pass(tracks, v.consistency, tuple(v.output.percentiles), bool(v.progress))
    writing = _write_outputs(cfg, source, frames, tasks, ordered, tracks, out_dir)
    wall = time.perf_counter() - start
    summary = build_summary(ordered, executor_info, wall, None, source.path, str(out_dir))
    write_json(out_dir / SUMMARY_FILE, summary)
    _write_meta(cfg, source, frames, ordered, tracks, consistency, writing, frames_seconds, wall, out_dir)
    failed = [r for r in ordered if r.status == FAILED]
    print(format_table(failed, 0) if failed else f"{len(tracks)} of {len(frames)} frames written to {out_dir}",
          flush=True)
    f = consistency["flicker"]
    if f["batch"] is not None:
        print(f"flicker (median relative change of distance between consecutive frames, static pixels): "
              f"frames as a batch {f['batch']:.4f}, consistent {f['consistent']:.4f}"
              + (f" ({f['reduction']:.1f}x lower)" if f.get("reduction") else ""), flush=True)
    done = sum(r.status == OK for r in ordered)
    print(f"{done} frames processed in {frames_seconds:.1f} s ({done / max(frames_seconds, 1e-9):.2f} frames/s), "
          f"{wall:.1f} s in all", flush=True)
    return summary["exit_code"]


def _write_outputs(cfg, source: VideoSource, frames: list[int], tasks, ordered, tracks: list[FrameTrack],
                   out_dir: Path) -> dict:
    """Step 4 of the module docstring (streaming over the frames). Returns what meta.json records about files."""
    from ..export.mesh import erp_grid_mesh
    from ..export.mesh_io import write_mesh_ply
    from ..export.pointcloud import erp_points, write_point_cloud_ply
    from ..dataset.video import FrameLoader

    o = cfg.video.output
    ex = cfg.export
    start = time.perf_counter()
    by_index = {t.index: t for t in tracks}
    scales = {t.index: math.exp(t.log_scale) for t in tracks}
    unit = ex.distance_png.unit
    if unit is None:
        # the clip's farthest surface at 65534: 65535 stays the sky's alone
        unit = max(t.raw_max * scales[t.index] for t in tracks) / 65534.0
    inv_lo = float(np.median([t.inv_percentiles[0] / scales[t.index] for t in tracks]))
    inv_hi = float(np.median([t.inv_percentiles[1] / scales[t.index] for t in tracks]))
    fps = o.fps
    if fps is None:
        step = (frames[-1] - frames[0]) / (len(frames) - 1) if len(frames) > 1 else 1.0
        fps = source.fps / max(step, 1e-9)
    writer = DepthVideoWriter(out_dir / str(o.video_name), float(fps), str(o.fourcc)) if o.video else None
    loader = FrameLoader(int(cfg.dataset.min_height))
    shape = None
    written: dict[str, int] = {"distance_png": 0, "confidence_png": 0, "pointclouds": 0, "meshes": 0}
    try:
        for k, (task, result) in enumerate(zip(tasks, ordered)):
            t = by_index.get(task.index)
            if t is None:
                if writer is not None and shape is not None:
                    writer.write(np.zeros((*shape, 3), np.uint8))
                continue
            distance, confidence = read_frame_raw(t.folder)
            distance = distance * scales[t.index]
            shape = tuple(distance.shape)
            name = task.name
            if o.png:  # beyond the clip's range (the sky): the largest value, as meta.json says
                write_distance_png(out_dir / "distance" / f"{name}.png", distance.clamp(max=65535 * unit), unit,
                                   ex.png_compress_level)
                write_confidence_png(out_dir / "confidence" / f"{name}.png", confidence, ex.png_compress_level)
                written["distance_png"] += 1
                written["confidence_png"] += 1
            if writer is not None:
                writer.write(colorize_fixed(distance, inv_lo, inv_hi, str(o.colormap)))
            pc = o.pointcloud_every is not None and k % int(o.pointcloud_every) == 0
            mesh = o.mesh_every is not None and k % int(o.mesh_every) == 0
            if pc or mesh:
                try:
                    rgb = loader.load(task.image_path)
                except UserError as exc:
                    log.warning("%s (no point cloud / mesh for it)", exc)
                    continue
                if pc:
                    points, colours = erp_points(distance, rgb, stride=int(ex.pointcloud.stride))
                    write_point_cloud_ply(out_dir / "pointclouds" / f"{name}.ply", points, colours, axes=str(ex.axes))
                    written["pointclouds"] += 1
                if mesh:
                    m = ex.dense.mesh
                    grid = erp_grid_mesh(distance, rgb, stride=int(m.stride), max_edge_stretch=m.max_edge_stretch,
                                         max_grazing_deg=m.max_grazing_deg, close_poles=bool(m.close_poles))
                    write_mesh_ply(out_dir / "meshes" / f"{name}.ply", grid, str(ex.axes))
                    written["meshes"] += 1
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        loader.close()
    return {
        "distance_png": {"unit": float(unit), "formula": "distance = value * unit", "invalid_value": 0,
                         "folder": "distance",
                         "beyond_range": "65535: the sky, and anything farther than 65534 x unit (with the automatic "
                                         "unit the clip's farthest surface is 65534)"}
        if o.png else None,
        "confidence_png": {"formula": "confidence = value / 65535", "folder": "confidence"} if o.png else None,
        "video": {"file": str(o.video_name), "fps": float(fps), "fourcc": str(o.fourcc), "colormap": str(o.colormap),
                  "inverse_distance_bounds": [inv_lo, inv_hi], "frames": writer.frames} if writer else None,
        "counts": written,
        "seconds": time.perf_counter() - start,
    }


def _write_meta(cfg, source: VideoSource, frames, ordered, tracks, consistency, writing, frames_seconds, wall,
                out_dir: Path) -> None:
    by_index = {t.index: t for t in tracks}
    per_frame = []
    network = []
    for r in ordered:
        entry = {"frame": frames[r.index], "time_s": frames[r.index] / source.fps, "name": r.name,
                 "status": r.status, "reason": r.reason}
        t = by_index.get(r.index)
        if t is not None:
            raw_meta = read_marker(t.folder) or {}
            timings = raw_meta.get("timings")
            if timings:
                network.append(timings["network"])
            entry.update({"scale": math.exp(t.log_scale), "timings": timings,
                          "frame_scale": (raw_meta.get("scale") or {}).get("units"),
                          "motion_to_previous": t.motion, "pairs": t.pairs, "pose": t.pose,
                          "flicker_batch": t.flicker_raw, "flicker": t.flicker})
        per_frame.append(entry)
    done = sum(r.status == OK for r in ordered)
    meta = {
        "source": source.describe(),
        "frames_selected": len(frames),
        "frames_written": len(tracks),
        "frames_failed": [{"frame": frames[r.index], "reason": r.reason} for r in ordered if r.status == FAILED],
        "units": "one scale for the whole clip: the frames' own scales (median 1, or per-frame metric) averaged "
                 "by the scale solve (video.consistency.anchor_frames)",
        "consistency": consistency,
        "outputs": writing,
        "speed": {"frames_processed": done, "frames_seconds": frames_seconds,
                  "frames_per_second": done / frames_seconds if frames_seconds > 0 and done else None,
                  "wall_seconds": wall,
                  "network_seconds_per_frame": float(np.median(network)) if network else None},
        "frames": per_frame,
        "machine": {"device": cfg.runtime.device},
        "config": to_container(cfg),
        "complete": True,
    }
    write_json(out_dir / META_FILE, meta)
