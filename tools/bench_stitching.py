"""Stitching benchmark: synthetic rooms x error families of the synthetic predictor x fusion methods.

    python tools/bench_stitching.py --scenes 2 --height 512 --face-size 256

For each cell: AbsRel and delta1 (after one global median scale), the seam score (mean jump of log-distance across
face borders relative to the truth's: 1.0 = no visible seam) and the time of the fusion stages (alignment, blending,
refinement). Prints markdown tables: per family x method, averaged over the scenes.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from modules.config import PROJECT_ROOT, register_resolvers
from modules.dataset.io import load_panorama
from modules.dataset.synthetic_scene import make_room, render_erp
from modules.evaluation.stitching import seam_score
from modules.pipeline import build_pipeline

AFFINE = ["predictor.corruption.scale_range=[0.5,2.0]", "predictor.corruption.shift_range=[-0.2,0.2]"]
FAMILIES = {
    "affine": AFFINE,
    "affine + warp 0.1": [*AFFINE, "predictor.corruption.warp_amplitude=0.1"],
    "affine + warp 0.1 + noise 0.02": [*AFFINE, "predictor.corruption.warp_amplitude=0.1", "predictor.corruption.noise_std=0.02"],
    "affine + 2 outlier faces": [*AFFINE, "predictor.corruption.outlier_faces=2"],
}
METHODS = {
    "naive per-face median": ["alignment=median", "refinement=none"],
    "affine (joint)": ["alignment=affine", "refinement=none"],
    "grid": ["alignment=grid", "refinement=none"],
    "grid + refinement": ["alignment=grid", "refinement=gradient"],
    "grid + refinement + 2 rotations": ["alignment=grid", "refinement=gradient", "projection.rotations=2"],
}
FUSION_STAGES = ("alignment", "blending", "refinement")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=2, help="number of synthetic rooms (seeds 0..N-1)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--face-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.scenes):
            folder = Path(tmp) / f"room{seed}"
            folder.mkdir()
            rgb, distance = render_erp(make_room(seed), args.height)
            Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "rgb.png")
            np.save(folder / "distance.npy", distance)
            pano = load_panorama(folder / "rgb.png")
            gt = torch.from_numpy(distance)
            for family, corruption in FAMILIES.items():
                for method, overrides in METHODS.items():
                    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
                        cfg = compose("config", overrides=[
                            "predictor=synthetic", f"projection.face_size={args.face_size}",
                            f"predictor.corruption.seed={seed}", f"paths.output_dir={tmp}/out", *corruption, *overrides])
                    pipeline = build_pipeline(cfg)
                    res = pipeline.run(pano, str(folder / "rgb.png"))
                    pred = res.distance.numpy().astype(np.float64)
                    pred = pred * np.median(distance / pred)
                    abs_rel = float(np.mean(np.abs(pred - distance) / distance))
                    delta1 = float(np.mean(np.maximum(pred / distance, distance / pred) < 1.25))
                    seam = seam_score(res.distance, gt, pipeline.cameras())
                    seconds = sum(res.timings.get(s, 0.0) for s in FUSION_STAGES)
                    results.setdefault((family, method), []).append((abs_rel, delta1, seam, seconds))
                    print(f"  room {seed} | {family} | {method}: AbsRel {abs_rel:.4f} seam {seam:.3f} {seconds:.2f} s",
                          flush=True)
    print()
    print(f"{args.scenes} rooms, {2 * args.height}x{args.height}, 20 faces of {args.face_size} px (rotations: 40); "
          f"{platform.machine()}, {torch.get_num_threads()} torch threads; time = alignment + blending + refinement")
    for family in FAMILIES:
        print()
        print(f"**{family}**")
        print()
        print("| method | AbsRel | delta1 | seam score | fusion time (s) |")
        print("|---|---|---|---|---|")
        for method in METHODS:
            r = np.array(results[(family, method)]).mean(0)
            print(f"| {method} | {r[0]:.4f} | {r[1]:.4f} | {r[2]:.3f} | {r[3]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
