"""Per-image CSV + summary JSON writers, the evaluation loop on a tiny synthetic set, and ERP resizing."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from modules.evaluation.dataset import list_eval_pairs
from modules.evaluation.evaluate import evaluate_pairs
from modules.geometry.erp_maps import resize_map
from modules.evaluation.metrics import METRIC_NAMES
from modules.evaluation.readers import READERS
from modules.evaluation.report import summarize_metrics, write_per_image_csv, write_summary_json


def test_summary_and_writers(tmp_path):
    rows = [
        {"image": "a", **{m: 1.0 for m in METRIC_NAMES}, "n_valid": 10},
        {"image": "b", **{m: 3.0 for m in METRIC_NAMES}, "n_valid": 20},
        {"image": "c", **{m: float("nan") for m in METRIC_NAMES}, "error": "no valid pixel"},
    ]
    summary = summarize_metrics(rows)
    assert summary["num_images"] == 3 and summary["num_scored"] == 2 and summary["num_failed"] == 1
    assert summary["metrics"] == {m: 2.0 for m in METRIC_NAMES}
    assert summary["metrics_median"]["rmse"] == 2.0

    write_per_image_csv(tmp_path / "per_image.csv", rows)
    write_summary_json(tmp_path / "summary.json", {**summary, "alignment": "median", "bad": float("inf")})
    with open(tmp_path / "per_image.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[: 1 + len(METRIC_NAMES)] == ["image", *METRIC_NAMES]
    assert [r["image"] for r in table] == ["a", "b", "c"]
    assert float(table[1]["abs_rel"]) == 3.0 and table[2]["error"] == "no valid pixel" and table[0]["error"] == ""
    loaded = json.loads((tmp_path / "summary.json").read_text())
    assert set(loaded["metrics"]) == set(METRIC_NAMES) and loaded["bad"] is None and loaded["alignment"] == "median"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_image.csv", "summary.json"]  # no temp files left


def test_evaluate_pairs_on_synthetic_set(tmp_path):
    H, W = 8, 16
    lat = (0.5 - (torch.arange(H) + 0.5) / H) * math.pi
    gt = (2.0 + torch.cos(lat))[:, None].expand(H, W).contiguous()
    np.save(tmp_path / "good_depth.npy", gt.numpy())
    np.save(tmp_path / "scaled_depth.npy", gt.numpy())
    np.save(tmp_path / "empty_depth.npy", np.zeros((H, W), np.float32))
    for stem in ("good", "scaled", "empty"):
        (tmp_path / f"{stem}.png").write_bytes(b"x")  # the fake predictor never opens the image
    half = torch.nn.functional.avg_pool2d(gt[None, None], 2)[0, 0]  # [4, 8], same pixel-centre grid
    predictions = {"good": gt, "scaled": 3.0 * half, "empty": gt}

    pairs = list_eval_pairs(tmp_path)
    rows = evaluate_pairs(
        pairs, lambda pair: predictions[pair.name], READERS["npy"], alignment="median", progress=False
    )
    by_name = {r["image"]: r for r in rows}
    assert by_name["good"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    # the half-resolution prediction is resized back to 8 x 16 and its factor 3 removed by the median alignment
    assert by_name["scaled"]["scale"] == pytest.approx(1 / 3, rel=0.02) and by_name["scaled"]["abs_rel"] < 0.04
    assert "no valid pixel" in by_name["empty"]["error"] and math.isnan(by_name["empty"]["rmse"])
    summary = summarize_metrics(rows)
    assert summary["num_failed"] == 1 and all(summary["metrics"][m] is not None for m in METRIC_NAMES)


def test_resize_map_wraps_longitude():
    x = torch.arange(4, dtype=torch.float32)[None, :].repeat(2, 1)  # columns 0, 1, 2, 3
    up = resize_map(x, (2, 8), erp=True)
    # output column 0 sits at source column -0.25: a quarter of the last column and three quarters of the first
    assert float(up[0, 0]) == pytest.approx(0.25 * 3 + 0.75 * 0)
    assert float(up[0, 7]) == pytest.approx(0.75 * 3 + 0.25 * 0)
    assert float(up[0, 3]) == pytest.approx(1.25)  # interior: plain bilinear
    clamped = resize_map(x, (2, 8), erp=False)
    assert float(clamped[0, 0]) == pytest.approx(0.0)
    assert resize_map(x, (2, 4)) is x
