"""The outdoor pass (projection.outdoor_rotations / outdoor_sky_fraction): a panorama whose first pass finds open sky
gets the faces of a second rotated copy, predicted separately and aligned with the first; indoors nothing changes."""

import pytest
import torch

from conftest import compose, write_scene
from modules.dataset.io import load_panorama
from modules.dataset.size_guard import estimate_peak_gb
from modules.pipeline import PROGRESS, build_pipeline

C = "predictor.corruption."
ERRORS = [f"{C}scale_range=[0.5,2.0]", f"{C}shift_range=[-0.2,0.2]", f"{C}warp_amplitude=0.05", f"{C}noise_std=0.01",
          f"{C}infinity_distance=500"]
SMALL = ["predictor=synthetic", "projection.face_size=32", *ERRORS]


@pytest.fixture(scope="module")
def small_street(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("outdoor_pass_street"), seed=1, height=64, kind="outdoor")


@pytest.fixture(scope="module")
def small_room(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("outdoor_pass_room"), seed=1, height=64, kind="room")


def run(scene, overrides):
    return build_pipeline(compose([*SMALL, *overrides])).run(load_panorama(scene), str(scene))


def test_open_sky_adds_the_second_copy_and_equals_two_rotations(small_street):
    """The first 20 faces' predictions are kept and only the 20 new ones predicted: the result is the one that
    projection.rotations=2 gives in one go (same faces, same per-face errors), bit for bit."""
    seen = []
    token = PROGRESS.set(lambda stage, fraction: seen.append((stage, fraction)))
    try:
        adaptive = run(small_street, [])
    finally:
        PROGRESS.reset(token)
    both = run(small_street, ["projection.rotations=2"])
    one = run(small_street, ["projection.outdoor_rotations=1"])
    assert adaptive.info["outdoor_pass"]["faces"] == 40 and adaptive.info["num_faces"] == 40
    assert adaptive.info["outdoor_pass"]["first_sky_fraction"] >= 0.02
    assert adaptive.faces.cameras.num_faces == 40
    assert torch.equal(adaptive.distance, both.distance) and torch.equal(adaptive.confidence, both.confidence)
    assert one.info["num_faces"] == 20 and "outdoor_pass" not in one.info
    assert not torch.equal(adaptive.distance, one.distance)
    # progress is told once per stage, in order, even with the second pass
    assert [s for s, _ in seen] == ["projection", "network", "alignment", "blending", "refinement", "scale"]
    assert [f for _, f in seen] == sorted(f for _, f in seen)


def test_a_room_keeps_one_copy(small_room):
    room = run(small_room, [])
    assert room.info["num_faces"] == 20 and "outdoor_pass" not in room.info
    assert torch.equal(room.distance, run(small_room, ["projection.outdoor_rotations=1"]).distance)


def test_the_sky_share_decides(small_street):
    """Above the street's sky share the pass is not taken; without sky detection it never is."""
    high = run(small_street, ["projection.outdoor_sky_fraction=1.0"])
    assert high.info["num_faces"] == 20 and "outdoor_pass" not in high.info
    blind = run(small_street, ["fusion.sky.enabled=false"])
    assert blind.info["num_faces"] == 20


def test_faces_predicted_apart_keep_their_own_errors(small_street):
    """The synthetic predictor keys each face's errors by its index among all copies (TangentCameras.face_ids), so
    the second copy predicted in a call of its own gets the errors it gets in one call of 40 faces."""
    cfg = compose([*SMALL])
    pipeline = build_pipeline(cfg)
    cams = pipeline.projection.cameras("cpu", torch.float32, rotations=2)
    assert torch.equal(cams.face_ids, torch.arange(40))
    second = cams.select(slice(20, None))
    assert torch.equal(second.face_ids, torch.arange(20, 40))
    assert torch.equal(second.to(dtype=torch.float64).face_ids, torch.arange(20, 40))
    predictor = pipeline.predictor
    predictor.begin_panorama(str(small_street), (64, 128))
    images = torch.zeros(40, 3, 32, 32)
    together = predictor.predict(images, cams)
    apart = predictor.predict(images[20:], second)
    assert torch.equal(apart, together[20:])
    plain = predictor.predict(images[20:], second.__class__(second.R_world_from_face, second.tan_half_fov, 32))
    assert not torch.equal(plain, apart)  # without the ids they would repeat the first copy's errors


def test_the_size_guard_plans_for_the_outdoor_pass():
    base = estimate_peak_gb(compose(["predictor=synthetic", "projection.outdoor_rotations=1"]), 1024, 2048)
    outdoor = estimate_peak_gb(compose(["predictor=synthetic"]), 1024, 2048)
    both = estimate_peak_gb(compose(["predictor=synthetic", "projection.rotations=2"]), 1024, 2048)
    assert outdoor > base and outdoor == pytest.approx(both)


def test_bad_values_are_refused():
    from modules.geometry.projections import IcosahedronProjection

    with pytest.raises(ValueError, match="outdoor_rotations"):
        IcosahedronProjection(outdoor_rotations=0)
    with pytest.raises(ValueError, match="outdoor_sky_fraction"):
        IcosahedronProjection(outdoor_sky_fraction=1.5)
    assert IcosahedronProjection(rotations=3, outdoor_rotations=2).outdoor_rotations == 3


def test_meta_json_says_which_faces_ran(small_street, small_room, tmp_path):
    import json

    from modules.export.outputs import write_panorama_outputs

    cfg = compose([*SMALL, f"paths.output_dir={tmp_path}", "export.maps=[]", "export.pointcloud.enabled=false"])
    for scene, count, outdoor in [(small_street, 40, True), (small_room, 20, False)]:
        rgb = load_panorama(scene)
        result = build_pipeline(cfg).run(rgb, str(scene))
        write_panorama_outputs(tmp_path / scene.parent.name, rgb, result, cfg, str(scene))
        faces = json.loads((tmp_path / scene.parent.name / "meta.json").read_text())["faces"]
        assert faces["count"] == count and (faces["outdoor_pass"] is not None) == outdoor
        if outdoor:
            assert faces["outdoor_pass"]["rotations"] == 2 and faces["outdoor_pass"]["first_sky_fraction"] > 0.02
