"""README figures of the test street's relative error under two settings: what fusion.sky.edge_band does to the
surfaces next to the sky (docs/images/sky_edges.png), and what the outdoor pass does (docs/images/outdoor_pass.png).

    python tools/figure_sky_edges.py [--figure sky_edges|outdoor_pass] [--out PATH]

The outdoor street of the test suite (tools/make_synthetic_scene.py --kind outdoor --seed 0, 512x256), every error
model of the synthetic predictor at moderate strength (the stitching benchmark's "combined"), faces of 128 px.
``sky_edges``: one copy of the faces (20), ``fusion.sky.edge_band=0`` against the default band. ``outdoor_pass``: one
copy (``projection.outdoor_rotations=1``) against the default (the street's sky adds a second copy: 40 faces). Rows:
the panorama (its upper half for sky_edges), the relative distance error |d - d_true| / d_true of each setting (0 black .. 0.5 and above
white; sky grey), each with its surface AbsRel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from modules.config import PROJECT_ROOT, register_resolvers  # noqa: E402
from modules.dataset.io import load_panorama  # noqa: E402
from modules.dataset.synthetic_scene import make_scene, render_erp  # noqa: E402
from modules.pipeline import build_pipeline  # noqa: E402

C = "predictor.corruption."
COMBINED = [f"{C}scale_range=[0.5,2.0]", f"{C}shift_range=[-0.2,0.2]", f"{C}warp_amplitude=0.05", f"{C}noise_std=0.01",
            f"{C}curve_strength=1.0", f"{C}edge_blur=0.01", f"{C}additive_noise=0.01", f"{C}infinity_distance=500",
            f"{C}low_info_sky=0.5", f"{C}low_info_warp=0.3"]


def error_image(d: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float]:
    """[H, W, 3] uint8 relative error (median-scaled) and the surface AbsRel."""
    both = np.isfinite(d) & np.isfinite(gt)
    s = np.median(gt[both] / d[both])
    err = np.zeros_like(gt)
    err[both] = np.abs(d[both] * s - gt[both]) / gt[both]
    v = (np.clip(err / 0.5, 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([v, v, v], -1)
    rgb[~np.isfinite(d)] = (90, 110, 140)  # taken for sky
    return rgb, float(err[both].mean())


ONE = "projection.outdoor_rotations=1"
#: figure -> the two settings compared (label, overrides), and the share of the rows shown (from the top)
FIGURES = {
    "sky_edges": ([("edge_band=0 (one copy of the faces)", ["fusion.sky.edge_band=0", ONE]),
                   ("edge_band=0.012 (default; one copy of the faces)", [ONE])], 0.5),
    "outdoor_pass": ([("one copy of the faces (outdoor_rotations=1, 20 faces)", [ONE]),
                      ("the default: the sky adds a second copy (40 faces)", [])], 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", choices=sorted(FIGURES), default="sky_edges")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/images/<figure>.png")
    args = parser.parse_args()
    out = args.out or PROJECT_ROOT / "docs" / "images" / f"{args.figure}.png"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rgb, gt = render_erp(make_scene("outdoor", 0), 256)
        path = Path(tmp) / "rgb.png"
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(path)
        np.save(Path(tmp) / "distance.npy", gt)  # what the synthetic predictor reads
        register_resolvers()
        rows = [(rgb * 255 + 0.5).astype(np.uint8), None, None]
        labels = ["panorama (upper half)" if FIGURES[args.figure][1] < 1 else "panorama", "", ""]
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            settings, shown = FIGURES[args.figure]
            for i, (name, extra) in enumerate(settings, start=1):
                cfg = compose("config", overrides=["predictor=synthetic", "projection.face_size=128",
                                                   f"paths.output_dir={tmp}/out", *COMBINED, *extra])
                d = build_pipeline(cfg).run(load_panorama(str(path)), str(path)).distance.numpy()
                rows[i], abs_rel = error_image(d, gt)
                labels[i] = f"relative error, {name}: AbsRel {abs_rel:.4f}"
    H = rgb.shape[0]
    crop = [r[: round(H * shown)] for r in rows]
    band = 14
    sheet = Image.new("RGB", (crop[0].shape[1], sum(c.shape[0] + band for c in crop)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for c, label in zip(crop, labels):
        draw.text((4, y + 1), label, fill="black")
        sheet.paste(Image.fromarray(c), (0, y + band))
        y += c.shape[0] + band
    sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    print(f"wrote {out}: " + "; ".join(labels[1:]))


if __name__ == "__main__":
    main()
