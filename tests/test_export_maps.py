"""distance.exr, points.exr, normal.exr / normal.png and mask.png: read back with OpenEXR and Pillow; normals from
the distance map against the analytic normals of a synthetic room."""

import numpy as np
import pytest
import torch
from PIL import Image

from modules.dataset.synthetic_scene import make_room, render_erp
from modules.evaluation.readers import read_exr_channels
from modules.export.maps import MAP_NAMES, write_exr, write_surface_maps
from modules.geometry.erp_normals import erp_normals
from modules.geometry.spherical import erp_directions


def wall_normals(scene, points: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Analytic inward normals of the room's walls at points on them (OpenCV axes); NaN elsewhere. points [N, 3]."""
    lo, hi = np.array(scene.lo), np.array(scene.hi)
    n = np.full_like(points, np.nan)
    for axis in range(3):
        for bound, sign in ((lo[axis], 1.0), (hi[axis], -1.0)):
            on = np.abs(points[:, axis] - bound) < tol
            n[on] = 0.0
            n[on, axis] = sign
    return n


def test_normals_from_the_distance_map_match_the_walls():
    scene = make_room(0)
    d = torch.from_numpy(render_erp(scene, 128)[1]).double()
    n = erp_normals(d).permute(1, 2, 0).reshape(-1, 3).numpy()
    p = (erp_directions(128, 256, dtype=torch.float64) * d[..., None]).reshape(-1, 3).numpy()
    ref = wall_normals(scene, p)
    on = np.isfinite(ref).all(1) & np.isfinite(n).all(1)
    assert on.sum() > 0.5 * len(p)
    angle = np.degrees(np.arccos(np.clip((n[on] * ref[on]).sum(1), -1, 1)))
    assert np.median(angle) < 2.0 and np.percentile(angle, 95) < 5.0
    assert np.isfinite(n).all(1).mean() > 0.99  # defined almost everywhere (not across depth edges only)
    assert ((n * p).sum(1)[np.isfinite(n).all(1)] < 0).all()  # facing the camera


def test_maps_read_back(tmp_path):
    d = torch.from_numpy(render_erp(make_room(2), 32)[1])
    d[:3] = float("inf")  # sky, as distance.npy stores it
    d[10, 5] = float("nan")
    files = write_surface_maps(tmp_path, d)
    assert set(files) == set(MAP_NAMES) and all(p.is_file() for p in files.values())
    dist = read_exr_channels(files["distance_exr"])
    assert list(dist) == ["Y"] and np.array_equal(dist["Y"], d.numpy(), equal_nan=True)
    pts = read_exr_channels(files["points_exr"])
    xyz = np.stack([pts[c] for c in "RGB"], -1)
    ref = (erp_directions(32, 64) * d[..., None]).numpy()
    valid = np.isfinite(d.numpy())
    assert np.allclose(xyz[valid], ref[valid], rtol=1e-6) and np.isnan(xyz[~valid]).all()
    mask = np.asarray(Image.open(files["mask_png"]))
    assert mask.dtype == np.uint8 and np.array_equal(mask == 255, valid) and set(np.unique(mask)) <= {0, 255}
    nexr = read_exr_channels(files["normal_exr"])
    n = np.stack([nexr[c] for c in "RGB"], -1)
    png = np.asarray(Image.open(files["normal_png"])).astype(np.float64) / 127.5 - 1.0
    ok = np.isfinite(n).all(-1)
    assert ok[valid].mean() > 0.95 and not ok[~valid].any()
    assert np.abs(png[ok] - n[ok]).max() <= 1 / 127.5 + 1e-6
    assert (np.asarray(Image.open(files["normal_png"]))[~ok] == 0).all()
    # normal.exr is stored as half floats (as Blender writes its passes), within half's rounding of the float32 normals
    import OpenEXR

    with OpenEXR.File(str(files["normal_exr"]), separate_channels=True) as f:
        assert {ch.pixels.dtype for ch in f.channels().values()} == {np.dtype(np.float16)}
    exact = erp_normals(d).permute(1, 2, 0).numpy()
    assert np.array_equal(np.isfinite(exact).all(-1), ok) and np.abs(n[ok] - exact[ok]).max() <= 2 ** -11
    with pytest.raises(ValueError, match="float32 or float16"):
        write_exr(tmp_path / "x.exr", {"Y": d.numpy()}, np.float64)
    with pytest.raises(ValueError, match="unknown map"):
        write_surface_maps(tmp_path, d, maps=("depth_exr",))


def test_exr_maps_skipped_without_openexr(tmp_path, monkeypatch, caplog):
    import modules.export.maps as maps

    monkeypatch.setattr(maps, "available", lambda module: module != "OpenEXR")
    files = write_surface_maps(tmp_path, torch.full((8, 16), 2.0))
    assert set(files) == {"normal_png", "mask_png"} and not list(tmp_path.glob("*.exr"))
    assert "immersivedepth[eval]" in caplog.text


def test_maps_written_side_by_side_equal_the_serial_ones(tmp_path):
    """write_surface_maps with an executor (what write_panorama_outputs does) writes the same bytes, no leftovers."""
    from concurrent.futures import ThreadPoolExecutor

    d = 1.0 + torch.rand(16, 32, generator=torch.Generator().manual_seed(0))
    d[0, :5] = float("inf")
    serial = write_surface_maps(tmp_path / "serial", d)
    with ThreadPoolExecutor(4) as pool:
        threaded = write_surface_maps(tmp_path / "threaded", d, pool=pool)
    assert list(serial) == list(threaded) == [m for m in MAP_NAMES if m in serial] and len(serial) >= 2
    for name in serial:
        assert serial[name].read_bytes() == threaded[name].read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "threaded").iterdir()) == sorted(p.name for p in serial.values())
