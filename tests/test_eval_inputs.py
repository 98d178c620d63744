"""mode=eval's inputs: the synthetic predictor on every dataset layout (it renders from the ground truth eval paired),
one bad or too-large image fails its pair only, and the documented one-pass baseline runs from the command line."""

from __future__ import annotations

import csv
import json

import numpy as np

from conftest import write_scene
from test_runner import run_cli
from test_size_guard import flat_png

FAST = ["projection.face_size=32", "predictor.corruption.warp_amplitude=0", "predictor.corruption.noise_std=0"]


def flat_dataset(root, seeds=(4, 5)):
    """root/room<seed>.png + root/room<seed>_depth.npy (no distance.npy anywhere)."""
    for seed in seeds:
        rgb = write_scene(root / f"tmp{seed}", seed, 32)
        rgb.rename(root / f"room{seed}.png")
        (root / f"tmp{seed}" / "distance.npy").rename(root / f"room{seed}_depth.npy")
        (root / f"tmp{seed}").rmdir()
    return root


def test_eval_on_a_flat_folder_with_the_synthetic_predictor(tmp_path):
    data = flat_dataset(tmp_path / "flat")
    out = tmp_path / "eval"
    proc = run_cli(["mode=eval", f"mode.dataset={data}", f"hydra.run.dir={out}", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"outputs: {out}" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["num_failed"] == 0
    # rendered from the paired truth with affine per-face errors, which the alignment undoes
    assert summary["metrics"]["abs_rel"] < 0.05
    meta = json.loads((out / "meta.json").read_text())
    assert meta["predictor"]["gt_distance"].endswith("_depth.npy")


def test_eval_scores_the_good_pairs_and_reports_a_huge_and_a_broken_image(tmp_path):
    data = flat_dataset(tmp_path / "flat", seeds=(6,))
    flat_png(data / "huge.png", 16384, 8192)
    np.save(data / "huge_depth.npy", np.ones((8, 16), np.float32))
    (data / "broken.png").write_bytes(b"")
    np.save(data / "broken_depth.npy", np.ones((8, 16), np.float32))
    out = tmp_path / "eval"
    proc = run_cli(["mode=eval", f"mode.dataset={data}", f"hydra.run.dir={out}", "dataset.max_memory_gb=8", *FAST],
                   tmp_path)
    assert proc.returncode == 1
    rows = {r["image"]: r for r in csv.DictReader(open(out / "per_image.csv"))}
    assert not rows["room6"].get("error") and float(rows["room6"]["abs_rel"]) < 0.05
    assert "16384x8192" in rows["huge"]["error"] and "dataset.max_height=" in rows["huge"]["error"]
    assert str(data / "broken.png") in rows["broken"]["error"] and "file is empty" in rows["broken"]["error"]


def test_eval_with_the_documented_one_pass_baseline(tmp_path):
    """The form configs/mode/eval.yaml documents (the reported crash was "Key 'pad_fraction' is not in struct")."""
    data = flat_dataset(tmp_path / "flat", seeds=(7,))
    out = tmp_path / "eval"
    proc = run_cli(["mode=eval", f"mode.dataset={data}", f"hydra.run.dir={out}", *FAST,
                    "mode.pipeline._target_=modules.pipeline.build_equirect", "+mode.pipeline.pad_fraction=0.125",
                    "+mode.pipeline.fill_iterations=512"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["eval"]["pipeline"] == "modules.pipeline.build_equirect"
    assert json.loads((out / "summary.json").read_text())["num_failed"] == 0
