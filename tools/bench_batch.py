"""Benchmark: panoramas per second of a batch run, runtime=local vs runtime=ray, on N synthetic panoramas.

    python tools/bench_batch.py --num 16 --height 64 --workers 2 [--override projection.face_size=64 ...]

Generates N procedural rooms (rgb.png + distance.npy) into a temporary folder, runs the batch mode on them with the
synthetic predictor, once in this process (runtime=local) and once on a local Ray instance with ``--workers`` actors
(``--cpus`` CPUs, default = workers), and prints a markdown table. The Ray instance is started before timing (like a
cluster that is already up); its start-up time is reported separately. Throughput = panoramas / wall time of the
batch (listing, fingerprints, workers loading their models, processing, writing; summary.json's ``wall_seconds``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_scenes(root: Path, num: int, height: int) -> None:
    from modules.dataset.synthetic_scene import make_room, render_erp

    for i in range(num):
        rgb, distance = render_erp(make_room(i), height)
        folder = root / f"scene{i:04d}"
        folder.mkdir(parents=True)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "rgb.png")
        np.save(folder / "distance.npy", distance)


def run(image_dir: Path, out: Path, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    from modules.config import PROJECT_ROOT
    from modules.modes.batch import SUMMARY_FILE
    from modules.modes.batch import run as run_batch

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset.image_path={image_dir}", f"paths.output_dir={out}",
                                           "batch.progress=false", *overrides])
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run tables
        code = run_batch(cfg)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    if code != 0:
        raise SystemExit(f"benchmark run failed (exit {code}): see {out / SUMMARY_FILE}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=16, help="number of panoramas")
    parser.add_argument("--height", type=int, default=64, help="panorama height (width = 2 x height)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray instance (default: --workers)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    args = parser.parse_args()
    overrides = ["predictor=synthetic", "runtime.device=cpu", *args.override]

    import ray

    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        make_scenes(tmp / "in", args.num, args.height)
        local = run(tmp / "in", tmp / "local", overrides)
        rows.append(("local (1 process, torch default threads)", local))
        local1 = run(tmp / "in", tmp / "local1", [*overrides, "runtime.num_threads=1"])
        rows.append(("local (1 process, 1 thread)", local1))
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus or args.workers, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            remote = run(tmp / "in", tmp / "ray", [*overrides, "runtime=ray", "runtime.device=cpu",
                                                    f"runtime.num_workers={args.workers}"])
        finally:
            ray.shutdown()
        rows.append((f"ray ({args.workers} workers x 1 CPU)", remote))

    extra = " ".join(args.override) or "-"
    print(f"{args.num} panoramas {2 * args.height}x{args.height}, predictor=synthetic, overrides: {extra}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({default_threads} threads by default); Ray start-up (not timed below): {ray_start:.1f} s\n")
    print("| runtime | panoramas | wall s | panoramas/s |")
    print("|---|---|---|---|")
    for label, s in rows:
        print(f"| {label} | {s['succeeded']} | {s['wall_seconds']:.1f} | {s['panoramas_per_second']:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
