"""Time the non-network stages of the tangent pipeline on a synthetic panorama.

    python tools/bench_pipeline.py --height 1024 --face-size 512 --repeats 3 [--threads 2] [overrides ...]

Renders a procedural room (exact ground truth), runs the pipeline with the synthetic predictor through the same
config the runner uses (Hydra overrides may follow), and prints a markdown table of seconds per stage: the first run
(cold: geometry caches are built) and the median of the following runs (warm: a batch of same-size panoramas), each
also as a ratio to a plain reference measured in the same process: one ``grid_sample`` of the panorama into all faces
(grid precomputed; the median of 5, before and after the runs), because absolute times on a shared machine vary.
Last, the process's peak resident memory (``resource`` ru_maxrss: reading the panorama, the runs and the writing;
the room is rendered in a child process).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from modules.config import PROJECT_ROOT, register_resolvers
from modules.dataset.io import load_panorama
from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.outputs import write_panorama_outputs
from modules.geometry.tangent import _erp_grid, face_rays, pad_erp
from modules.pipeline import build_pipeline

STAGES = ["projection", "alignment", "blending", "writing"]


def _render(height: int, folder: str) -> None:
    """Write the procedural room's rgb.png and exact distance.npy at ``height`` into ``folder`` (run in a child
    process: rendering an 8K room in NumPy alone peaks at ~8.9 GB, which is not the pipeline's memory)."""
    rgb, distance = render_erp(make_room(0), height)
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(Path(folder) / "rgb.png")
    np.save(Path(folder) / "distance.npy", distance)


def reference_seconds(pano: torch.Tensor, cameras, repeats: int = 5) -> float:
    """Median time of one grid_sample of the panorama [3, H, W] into every face (the grid computed beforehand)."""
    rays = face_rays(cameras)
    F_, S = rays.shape[:2]
    H, W = pano.shape[1:]
    grid = _erp_grid(rays, H, W, pad=1).reshape(1, F_ * S, S, 2)
    padded = pad_erp(pano[None], 1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.nn.functional.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--face-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="runs after the first (cold) one")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. alignment=median")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            child.submit(_render, args.height, str(tmp)).result()
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[f"projection.face_size={args.face_size}", f"paths.output_dir={tmp / 'out'}", "predictor=synthetic",
                           *args.overrides],
            )
        image_path = str(tmp / "rgb.png")
        pano = load_panorama(image_path)
        pipeline = build_pipeline(cfg)
        runs = []
        ref_before = reference_seconds(pano, pipeline.projection.cameras("cpu", torch.float32))
        for i in range(args.repeats + 1):
            result = pipeline.run(pano, image_path)
            start = time.perf_counter()
            write_panorama_outputs(tmp / f"out{i}", pano, result, cfg, image_path)
            times = dict(result.timings)
            times["writing"] = time.perf_counter() - start
            runs.append(times)
        ref = statistics.median([ref_before, reference_seconds(pano, pipeline.cameras())])
    cold, warm = runs[0], runs[1:]
    stages = STAGES + [k for k in cold if k not in STAGES and k != "network"]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; panorama {2 * args.height}x{args.height}, "
          f"{pipeline.cameras().num_faces} faces of {args.face_size} px; overrides: {' '.join(args.overrides) or '-'}")
    print(f"reference: one grid_sample of the panorama into all faces = {ref:.3f} s; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| stage | cold (s) | cold / ref | warm, median (s) | warm / ref |")
    print("|---|---|---|---|---|")

    def row(name: str, c: float, w: float) -> str:
        return f"| {name} | {c:.3f} | {c / ref:.1f} | {w:.3f} | {w / ref:.1f} |"

    for s in stages:
        w = statistics.median(r.get(s, 0.0) for r in warm) if warm else float("nan")
        print(row(s, cold.get(s, 0.0), w))
    total_cold = sum(cold.get(s, 0.0) for s in stages)
    total_warm = statistics.median(sum(r.get(s, 0.0) for s in stages) for r in warm) if warm else float("nan")
    # the stages the pipeline times (projection -> scale), without the files written after it
    inner = [s for s in stages if s != "writing"]
    inner_cold = sum(cold.get(s, 0.0) for s in inner)
    inner_warm = statistics.median(sum(r.get(s, 0.0) for s in inner) for r in warm) if warm else float("nan")
    print(row("stages, projection -> scale (no writing)", inner_cold, inner_warm))
    print(row("**all non-network**", total_cold, total_warm))
    net_w = statistics.median(r.get("network", 0.0) for r in warm) if warm else float("nan")
    print(row("(network: synthetic predictor)", cold.get("network", 0.0), net_w))
    print(f"| (reference) | {ref:.3f} | 1.0 | {ref:.3f} | 1.0 |")
    # ru_maxrss: kilobytes on Linux (reading the panorama, the runs, the writing; the room is rendered in a child)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
