"""README figure: what fusion.sky.edge_band does to the surfaces next to the sky (docs/images/sky_edges.png).

    python tools/figure_sky_edges.py [--out docs/images/sky_edges.png]

The outdoor street of the test suite (tools/make_synthetic_scene.py --kind outdoor --seed 0, 512x256), every error
model of the synthetic predictor at moderate strength (the stitching benchmark's "combined"), 20 faces of 128 px;
the pipeline run with ``fusion.sky.edge_band=0`` and with the default. Rows: the panorama's upper half, the relative
distance error |d - d_true| / d_true without and with the extension (0 black .. 0.5 and above white; sky grey), each
with its surface AbsRel.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "images" / "sky_edges.png")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rgb, gt = render_erp(make_scene("outdoor", 0), 256)
        path = Path(tmp) / "rgb.png"
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(path)
        np.save(Path(tmp) / "distance.npy", gt)  # what the synthetic predictor reads
        register_resolvers()
        rows = [(rgb * 255 + 0.5).astype(np.uint8), None, None]
        labels = ["panorama (upper half)", "", ""]
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            for i, extra in ((1, ["fusion.sky.edge_band=0"]), (2, [])):
                cfg = compose("config", overrides=["predictor=synthetic", "projection.face_size=128",
                                                   f"paths.output_dir={tmp}/out", *COMBINED, *extra])
                d = build_pipeline(cfg).run(load_panorama(str(path)), str(path)).distance.numpy()
                rows[i], abs_rel = error_image(d, gt)
                labels[i] = (f"relative error, edge_band=0: AbsRel {abs_rel:.4f}" if extra
                             else f"relative error, edge_band=0.012 (default): AbsRel {abs_rel:.4f}")
    H = rgb.shape[0]
    crop = [r[: H // 2] for r in rows]
    band = 14
    sheet = Image.new("RGB", (crop[0].shape[1], sum(c.shape[0] + band for c in crop)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for c, label in zip(crop, labels):
        draw.text((4, y + 1), label, fill="black")
        sheet.paste(Image.fromarray(c), (0, y + band))
        y += c.shape[0] + band
    sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: " + "; ".join(labels[1:]))


if __name__ == "__main__":
    main()
