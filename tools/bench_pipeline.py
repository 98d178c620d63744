"""Time the non-network stages of the tangent pipeline on a synthetic panorama.

    python tools/bench_pipeline.py --height 1024 --face-size 512 --repeats 3 [--threads 2] [overrides ...]

Renders a procedural room (exact ground truth), runs the pipeline with the synthetic predictor through the same
config the runner uses (Hydra overrides may follow), and prints a markdown table of seconds per stage: the first run
(cold: geometry caches are built) and the median of the following runs (warm: a batch of same-size panoramas).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from modules.config import PROJECT_ROOT, register_resolvers
from modules.dataset.io import load_panorama
from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.outputs import write_panorama_outputs
from modules.pipeline import build_pipeline

STAGES = ["projection", "alignment", "blending", "writing"]


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
        rgb, distance = render_erp(make_room(0), args.height)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(tmp / "rgb.png")
        np.save(tmp / "distance.npy", distance)
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
        for i in range(args.repeats + 1):
            result = pipeline.run(pano, image_path)
            start = time.perf_counter()
            write_panorama_outputs(tmp / f"out{i}", pano, result, cfg, image_path)
            times = dict(result.timings)
            times["writing"] = time.perf_counter() - start
            runs.append(times)
    cold, warm = runs[0], runs[1:]
    stages = STAGES + [k for k in cold if k not in STAGES and k != "network"]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; panorama {2 * args.height}x{args.height}, "
          f"{pipeline.cameras().num_faces} faces of {args.face_size} px; overrides: {' '.join(args.overrides) or '-'}")
    print()
    print("| stage | cold (s) | warm, median (s) |")
    print("|---|---|---|")
    for s in stages:
        w = statistics.median(r.get(s, 0.0) for r in warm) if warm else float("nan")
        print(f"| {s} | {cold.get(s, 0.0):.3f} | {w:.3f} |")
    total_cold = sum(cold.get(s, 0.0) for s in stages)
    total_warm = statistics.median(sum(r.get(s, 0.0) for s in stages) for r in warm) if warm else float("nan")
    print(f"| **all non-network** | **{total_cold:.3f}** | **{total_warm:.3f}** |")
    print(f"| (network: synthetic predictor) | {cold.get('network', 0.0):.3f} | "
          f"{statistics.median(r.get('network', 0.0) for r in warm) if warm else float('nan'):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
