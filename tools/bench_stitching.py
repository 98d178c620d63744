"""Stitching benchmark: synthetic scenes x error models of the synthetic predictor x fusion methods.

    python tools/bench_stitching.py --kinds room corridor outdoor --scenes 1 --height 256 --face-size 128
    python tools/bench_stitching.py --models combined --methods "affine" "oracle affine" --json out.json

For each cell: AbsRel on surfaces (after one global median scale; sky excluded) overall and by true-distance band
(< 5 m, 5-20 m, > 20 m), delta1, the seam score (mean jump of log-distance across face borders relative to the
truth's: 1.0 = no visible seam), sky precision / recall (a pixel is flagged sky when its distance is not finite),
the fraction of surface pixels flagged as sky, and the time of the fusion stages (alignment, sky, blending,
refinement). The ORACLE rows fit each face's map of the family (affine, or the curve of alignment=curve) to the
truth, then blend as the others do: what the predictions allow. Prints markdown tables per scene kind.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.config import PROJECT_ROOT, register_resolvers  # noqa: E402
from modules.dataset.io import load_panorama  # noqa: E402
from modules.dataset.synthetic_scene import make_scene, render_erp  # noqa: E402
from modules.evaluation.oracle import OracleAlignment  # noqa: E402
from modules.evaluation.stitching import seam_score  # noqa: E402
from modules.pipeline import build_pipeline  # noqa: E402

C = "predictor.corruption."
AFFINE = [f"{C}scale_range=[0.5,2.0]", f"{C}shift_range=[-0.2,0.2]"]
# every model alone (on top of the per-face scale and shift), then all of them at moderate strength
MODELS = {
    "affine": AFFINE,
    "warp 0.1 + noise 0.02": [*AFFINE, f"{C}warp_amplitude=0.1", f"{C}noise_std=0.02"],
    "curve 1.0": [*AFFINE, f"{C}curve_strength=1.0"],
    "edge blur 0.01": [*AFFINE, f"{C}edge_blur=0.01"],
    "additive noise 0.01": [*AFFINE, f"{C}additive_noise=0.01"],
    "sky at raw 0": [*AFFINE, f"{C}infinity_distance=500"],
    "low-info faces": [*AFFINE, f"{C}low_info_sky=0.5", f"{C}low_info_warp=0.3"],
    "2 outlier faces": [*AFFINE, f"{C}outlier_faces=2"],
    "combined": [*AFFINE, f"{C}warp_amplitude=0.05", f"{C}noise_std=0.01", f"{C}curve_strength=1.0",
                 f"{C}edge_blur=0.01", f"{C}additive_noise=0.01", f"{C}infinity_distance=500",
                 f"{C}low_info_sky=0.5", f"{C}low_info_warp=0.3"],
}
# method -> (config overrides, oracle degree or None). Every method but "default" keeps the copies it names
# (projection.outdoor_rotations=1: no outdoor pass); "default" is the project's defaults (affine, no refinement,
# and outdoors, when the first pass finds sky, a second rotated copy of the faces)
ONE = "projection.outdoor_rotations=1"
METHODS = {
    "naive per-face median": (["alignment=median", "refinement=none", ONE], None),
    "default": ([], None),
    "affine": (["alignment=affine", "refinement=none", ONE], None),
    "affine + 2 rotations": (["alignment=affine", "refinement=none", "projection.rotations=2"], None),
    "grid": (["alignment=grid", "refinement=none", ONE], None),
    "affine + refinement": (["alignment=affine", "refinement=gradient", ONE], None),
    "affine + refinement + 2 rotations": (["alignment=affine", "refinement=gradient", "projection.rotations=2"], None),
    "affine + log_merge": (["alignment=affine", "refinement=log_merge", ONE], None),
    "affine + log_merge + 2 rotations": (["alignment=affine", "refinement=log_merge", "projection.rotations=2"], None),
    "grid + refinement": (["alignment=grid", "refinement=gradient", ONE], None),
    "grid + refinement + 2 rotations": (["alignment=grid", "refinement=gradient", "projection.rotations=2"], None),
    "curve": (["alignment=curve", "refinement=none", ONE], None),
    "curve + refinement": (["alignment=curve", "refinement=gradient", ONE], None),
    "curve + refinement + 2 rotations": (["alignment=curve", "refinement=gradient", "projection.rotations=2"], None),
    "ORACLE affine": (["alignment=affine", "refinement=none", ONE], 1),
    "ORACLE affine + 2 rotations": (["alignment=affine", "refinement=none", "projection.rotations=2"], 1),
    "ORACLE curve": (["alignment=curve", "refinement=none", ONE], 2),
}
FUSION_STAGES = ("alignment", "sky", "blending", "refinement")
BANDS = {"<5 m": (0.0, 5.0), "5-20 m": (5.0, 20.0), ">20 m": (20.0, np.inf)}


def score(pred: np.ndarray, gt: np.ndarray) -> dict:
    """AbsRel (all surfaces and per band), delta1, sky precision / recall, surface pixels flagged as sky."""
    gt_sky, pred_sky = ~np.isfinite(gt), ~np.isfinite(pred)
    both = ~gt_sky & ~pred_sky
    out = {}
    if both.any():
        p = pred[both] * np.median(gt[both] / pred[both])
        g = gt[both]
        rel = np.abs(p - g) / g
        out["abs_rel"] = float(rel.mean())
        out["delta1"] = float(np.mean(np.maximum(p / g, g / p) < 1.25))
        for band, (lo, hi) in BANDS.items():
            m = (g >= lo) & (g < hi)
            out[band] = float(rel[m].mean()) if m.sum() >= 20 else float("nan")
    tp = float((gt_sky & pred_sky).sum())
    out["sky_precision"] = tp / pred_sky.sum() if pred_sky.any() else (float("nan") if not gt_sky.any() else 0.0)
    out["sky_recall"] = tp / gt_sky.sum() if gt_sky.any() else float("nan")
    out["surface_as_sky"] = float((pred_sky & ~gt_sky).sum() / max(1, (~gt_sky).sum()))
    return out


def run_cell(folder: Path, gt: np.ndarray, seed: int, model: list[str], method: tuple, args) -> dict:
    overrides, oracle = method
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        refined = any(o.startswith("refinement=") and o != "refinement=none" for o in overrides)
        refine = [f"refinement.height={args.height}"] if refined else []
        cfg = compose("config", overrides=[
            "predictor=synthetic", f"projection.face_size={args.face_size}", *refine,
            f"predictor.corruption.seed={seed}", "paths.output_dir=/tmp/unused", *model, *overrides, *args.set])
    pipeline = build_pipeline(cfg)
    if oracle is not None:
        degree = cfg.alignment.degree if oracle == 2 and "degree" in cfg.alignment else oracle
        pipeline.alignment = OracleAlignment(torch.from_numpy(gt), degree=degree)
    pano = load_panorama(folder / "rgb.png")
    start = time.perf_counter()
    res = pipeline.run(pano, str(folder / "rgb.png"))
    wall = time.perf_counter() - start
    pred = res.distance.numpy().astype(np.float64)
    out = score(pred, gt.astype(np.float64))
    out["seam"] = seam_score(res.distance, torch.from_numpy(gt), res.faces.cameras)  # the faces it ran (outdoor pass)
    out["faces"] = res.faces.cameras.num_faces
    out["fusion_s"] = sum(res.timings.get(s, 0.0) for s in FUSION_STAGES)
    out["wall_s"] = wall
    out["finite_output"] = bool(np.isfinite(pred[np.isfinite(gt)]).mean() > 0) and not np.isnan(pred).any()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["room", "corridor", "outdoor"])
    parser.add_argument("--scenes", type=int, default=1, help="scenes per kind (seeds 0..N-1)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--face-size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"error models: {list(MODELS)}")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"methods: {list(METHODS)}")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides for every run")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write every cell here")
    args = parser.parse_args(argv)
    for name in args.models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}")
    for name in args.methods:
        if name not in METHODS:
            parser.error(f"unknown method {name!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    cells: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            for seed in range(args.scenes):
                folder = Path(tmp) / f"{kind}{seed}"
                folder.mkdir()
                rgb, gt = render_erp(make_scene(kind, seed), args.height)
                Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "rgb.png")
                np.save(folder / "distance.npy", gt)
                for model in args.models:
                    for method in args.methods:
                        r = run_cell(folder, gt, seed, MODELS[model], METHODS[method], args)
                        cells.setdefault((kind, model, method), []).append(r)
                        print(f"  {kind} {seed} | {model} | {method}: AbsRel {r.get('abs_rel', float('nan')):.4f} "
                              f"sky P/R {r['sky_precision']:.3f}/{r['sky_recall']:.3f} {r['fusion_s']:.2f} s",
                              flush=True)
    print()
    print(f"{args.scenes} scene(s) per kind, {2 * args.height}x{args.height}, 20 faces of {args.face_size} px; "
          f"{platform.machine()}, {torch.get_num_threads()} torch threads; time = alignment + sky + blending + "
          f"refinement; AbsRel on surfaces after one median scale")
    keys = ["abs_rel", *BANDS, "delta1", "seam", "sky_precision", "sky_recall", "surface_as_sky", "fusion_s"]
    table = {}
    for kind in args.kinds:
        print()
        print(f"**{kind}**")
        print()
        print("| error model | method | AbsRel | <5 m | 5-20 m | >20 m | delta1 | seam | sky P | sky R | surface->sky | "
              "time (s) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model in args.models:
            for method in args.methods:
                rows = cells[(kind, model, method)]
                mean = {k: float(np.nanmean([r.get(k, np.nan) for r in rows])) if any(
                    np.isfinite(r.get(k, np.nan)) for r in rows) else float("nan") for k in keys}
                table[f"{kind} | {model} | {method}"] = mean
                fmt = lambda k, f: "-" if not np.isfinite(mean[k]) else format(mean[k], f)  # noqa: E731
                print(f"| {model} | {method} | {fmt('abs_rel', '.4f')} | {fmt('<5 m', '.4f')} | {fmt('5-20 m', '.4f')} "
                      f"| {fmt('>20 m', '.4f')} | {fmt('delta1', '.4f')} | {fmt('seam', '.2f')} | "
                      f"{fmt('sky_precision', '.3f')} | {fmt('sky_recall', '.3f')} | {fmt('surface_as_sky', '.4f')} "
                      f"| {fmt('fusion_s', '.2f')} |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
