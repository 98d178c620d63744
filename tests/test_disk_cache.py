"""The optional on-disk cache of the ERP <- face tables (``fusion.blender.cache_dir``, modules/geometry/cache.py):
a new pipeline with the same config loads them instead of rebuilding, other values get other files, and a damaged
file is rebuilt with a warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import modules.geometry.face_boxes as face_boxes
import modules.geometry.tangent as tangent
from modules.geometry.cache import DiskCache
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import cached_erp_face_samples


def count_calls(monkeypatch, module, name: str) -> list:
    """Replaces ``module.name`` by a wrapper that records each call's (height, width) and calls the real builder."""
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture
def count_builds(monkeypatch):
    """Counts the calls of the table builder (the real one runs)."""
    return count_calls(monkeypatch, tangent, "erp_face_samples")


@pytest.fixture
def count_box_builds(monkeypatch):
    """Counts the calls of the ERP <- face box builder (what blending and the sky splat with; the real one runs)."""
    return count_calls(monkeypatch, face_boxes, "erp_face_boxes")


def test_a_new_pipeline_loads_the_tables_from_disk(tmp_path, count_box_builds):
    from conftest import compose
    from modules.dataset.io import load_panorama
    from modules.dataset.synthetic_scene import make_scene, render_erp
    from modules.pipeline import build_pipeline

    rgb, distance = render_erp(make_scene("room", 1), 32)
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "distance.npy", distance)
    panorama = load_panorama(tmp_path / "rgb.png")
    cfg = compose(["predictor=synthetic", "alignment=median", "projection.face_size=16", "paths.output_dir=/tmp/unused",
                   f"fusion.blender.cache_dir={tmp_path / 'geometry'}"])
    first = build_pipeline(cfg).run(panorama, str(tmp_path / "rgb.png"))
    size = tuple(panorama.shape[-2:])  # the output's
    assert size == (32, 64)
    # the blender's and the sky's boxes at the output size are one file (same values); the alignment's overlap
    # samples are not on disk (the median alignment builds none)
    assert count_box_builds.count(size) == 1
    assert len(list((tmp_path / "geometry").glob("*.pt"))) == 1 and not list((tmp_path / "geometry").glob("*.tmp"))
    second = build_pipeline(cfg).run(panorama, str(tmp_path / "rgb.png"))  # fresh pipeline: empty memory cache
    assert count_box_builds.count(size) == 1  # loaded, not rebuilt
    assert torch.equal(first.distance, second.distance) and torch.equal(first.confidence, second.confidence)
    off = compose(["predictor=synthetic", "alignment=median", "projection.face_size=16", "paths.output_dir=/tmp/unused"])
    assert off.fusion.blender.cache_dir is None and off.fusion.sky.cache_dir is None  # default: off
    build_pipeline(off).run(panorama, str(tmp_path / "rgb.png"))
    assert count_box_builds.count(size) == 2  # off: built again, once for the blender and the sky (one shared table)


def test_loaded_tables_equal_built_ones_and_other_values_get_other_files(tmp_path, count_builds):
    disk = DiskCache(tmp_path)
    cams = IcosahedronProjection(0, 16, 1.2).cameras()
    built = cached_erp_face_samples(cams, 16, 32, 1.0, disk)
    loaded = cached_erp_face_samples(cams, 16, 32, 1.0, disk)
    assert len(count_builds) == 1 and loaded is not built
    for name in ("erp_index", "face_index", "face_xy", "cos_axis", "weight"):
        a, b = getattr(built, name), getattr(loaded, name)
        assert a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
    assert (loaded.height, loaded.width, loaded.num_faces) == (16, 32, cams.num_faces)
    wider = IcosahedronProjection(0, 16, 1.5).cameras()  # field of view
    cached_erp_face_samples(wider, 16, 32, 1.0, disk)
    cached_erp_face_samples(cams, 24, 48, 1.0, disk)  # size
    cached_erp_face_samples(cams, 16, 32, 2.0, disk)  # weight power
    cached_erp_face_samples(cams.to(dtype=torch.float64), 16, 32, 1.0, disk)  # dtype
    assert len(count_builds) == 5 and len(list(tmp_path.glob("*.pt"))) == 5
    assert not torch.equal(cached_erp_face_samples(wider, 16, 32, 1.0, disk).face_xy, built.face_xy)
    assert len(count_builds) == 5


def test_a_truncated_or_foreign_file_is_rebuilt_with_a_warning(tmp_path, count_builds):
    disk = DiskCache(tmp_path)
    cams = IcosahedronProjection(0, 16, 1.2).cameras()
    good = cached_erp_face_samples(cams, 16, 32, 1.0, disk)
    (path,) = tmp_path.glob("*.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="unusable"):
        again = cached_erp_face_samples(cams, 16, 32, 1.0, disk)
    assert len(count_builds) == 2 and torch.equal(again.face_xy, good.face_xy)
    assert path.read_bytes() == data  # rewritten whole
    # a file holding another key's table under this name (e.g. a hash clash or a copied file) is not used
    cached_erp_face_samples(cams, 16, 32, 2.0, disk)
    (other,) = set(tmp_path.glob("*.pt")) - {path}
    path.write_bytes(other.read_bytes())
    with pytest.warns(RuntimeWarning, match="another key"):
        cached_erp_face_samples(cams, 16, 32, 1.0, disk)
    assert len(count_builds) == 4


def test_an_unwritable_folder_only_warns(tmp_path, count_builds):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cams = IcosahedronProjection(0, 16, 1.2).cameras()
    with pytest.warns(RuntimeWarning, match="could not write"):
        samples = cached_erp_face_samples(cams, 16, 32, 1.0, DiskCache(blocker / "geometry"))
    assert samples.erp_index.numel() > 0 and len(count_builds) == 1


def test_the_cache_dir_key_passes_validation(compose_cfg, tmp_path):
    from modules.validation import config_problems

    base = ["predictor=synthetic", "paths.output_dir=/tmp/unused"]
    assert config_problems(compose_cfg(base + [f"fusion.blender.cache_dir={tmp_path}"]), weights=False) == []
    typo = config_problems(compose_cfg(base + [f"+fusion.blender.cache_dri={tmp_path}"]), weights=False)
    assert any("cache_dri" in line for line in typo)
