"""Derived-geometry caches are keyed by value and owned by the pipeline (no tensor addresses in keys)."""

import torch

from modules.fusion.alignment import GlobalAffineAlignment
from modules.fusion.blending import Blender
from modules.fusion.faces import AlignedFaces
from modules.fusion.grid_alignment import GridAlignment
from modules.geo_predictors.synthetic import SyntheticPredictor
from modules.geometry.cache import ValueCache
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import TangentCameras
from modules.pipeline import PanoramaPipeline


def faces_for(cams: TangentCameras) -> AlignedFaces:
    """Faces whose inverse distance is 1 everywhere: the blend is then 1 exactly where the faces reach."""
    F, S = cams.num_faces, cams.size
    ones = torch.ones(F, S, S)
    return AlignedFaces(ones, ones.bool(), ones, cams)


def test_cache_key_is_a_value():
    cams = IcosahedronProjection(0, 16, 1.2).cameras()
    same = TangentCameras(cams.R_world_from_face.clone(), cams.tan_half_fov.clone(), 16)
    wider = TangentCameras(cams.R_world_from_face, cams.tan_half_fov * 1.5, 16)  # same rotation tensor
    assert same.cache_key() == cams.cache_key()  # another tensor, same values
    assert wider.cache_key() != cams.cache_key()  # the field of view is part of the key
    assert cams.to(dtype=torch.float64).cache_key() != cams.cache_key()


def test_blender_never_serves_another_field_of_view():
    """Same rotation tensor, narrower faces: the cached samples of the wide set must not be reused (with a data_ptr
    key they were, and the narrow faces' coverage came out as the wide faces')."""
    wide = IcosahedronProjection(0, 16, 1.7).cameras()
    narrow = TangentCameras(wide.R_world_from_face, wide.tan_half_fov * 0.3, 16)  # gaps between faces
    shared = Blender(fill_iterations=0)
    shared.blend(faces_for(wide), 16, 32)
    _, conf_cached = shared.blend(faces_for(narrow), 16, 32)
    _, conf_fresh = Blender(fill_iterations=0).blend(faces_for(narrow), 16, 32)
    assert torch.equal(conf_cached, conf_fresh)
    assert bool((conf_fresh == 0).any())  # the narrow faces leave holes the wide ones do not
    assert shared.samples(faces_for(narrow), 16, 32).erp_index.numel() < shared.samples(
        faces_for(wide), 16, 32).erp_index.numel()


def test_value_cache_is_bounded_and_lru():
    cache = ValueCache(max_entries=2)
    built = []
    for key in ("a", "b", "a", "c", "b"):
        cache.get(key, lambda k=key: built.append(k) or k.upper())
    assert built == ["a", "b", "c", "b"]  # "a" was reused; "b" was evicted by "c" as least recently used
    assert len(cache) == 2 and "a" not in cache and "c" in cache


def test_pipeline_owns_one_cache_shared_by_its_stages():
    grid = GridAlignment(affine=GlobalAffineAlignment())
    pipe = PanoramaPipeline(IcosahedronProjection(0, 16, 1.2), SyntheticPredictor(None), grid, Blender())
    assert pipe.alignment.cache is pipe.cache and pipe.blender.cache is pipe.cache
    assert grid.affine.cache is pipe.cache


def test_curve_alignment_and_sky_use_the_pipelines_cache():
    from modules.fusion.curve_alignment import CurveAlignment
    from modules.fusion.sky import SkyDetector

    curve, sky = CurveAlignment(), SkyDetector(enabled=True)
    pipe = PanoramaPipeline(IcosahedronProjection(0, 16, 1.2), SyntheticPredictor(None), curve, Blender(), sky=sky)
    assert curve.cache is pipe.cache and curve.affine.cache is pipe.cache and sky.cache is pipe.cache


def test_sky_samples_are_keyed_by_the_field_of_view():
    """Two camera sets with one rotation tensor and different fields of view get different ERP <- face samples."""
    from modules.fusion.sky import SkyDetector

    wide = IcosahedronProjection(0, 16, 1.7).cameras()
    narrow = TangentCameras(wide.R_world_from_face, wide.tan_half_fov * 0.3, 16)
    sky = SkyDetector(enabled=True)
    from_wide = sky._samples(faces_for(wide), 16)
    from_narrow = sky._samples(faces_for(narrow), 16)
    assert from_narrow is not from_wide and len(sky.cache) == 2
    assert sky._samples(faces_for(wide), 16) is from_wide  # the same values hit the cache


def test_blender_and_sky_share_one_table_of_the_same_size():
    """Sky detection at the blending size (a 512x256 panorama, detect_height 256) gets the blender's geometry (the
    ERP <- face boxes both splat with), not a second copy built again."""
    from modules.fusion.sky import SkyDetector

    cams = IcosahedronProjection(0, 16, 1.2).cameras()
    blender, sky = Blender(), SkyDetector(enabled=True)
    pipe = PanoramaPipeline(IcosahedronProjection(0, 16, 1.2), SyntheticPredictor(None), GlobalAffineAlignment(),
                            blender, sky=sky)
    assert sky.weight_power == blender.weight_power
    from_blender = blender.boxes(faces_for(cams), 16, 32)
    assert sky._samples(faces_for(cams), 16) is from_blender
    assert sky._samples(faces_for(cams), 8) is not from_blender and pipe.cache is sky.cache
