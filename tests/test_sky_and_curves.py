"""#12: sky end to end, the non-affine alignment, and robustness, on the project's own scenes and error models."""


import numpy as np
import pytest
import torch
from PIL import Image

from modules.dataset.io import load_panorama
from modules.dataset.synthetic_scene import make_scene, render_erp
from modules.evaluation.evaluate import sky_scores

C = "predictor.corruption."
AFFINE = [f"{C}scale_range=[0.5,2.0]", f"{C}shift_range=[-0.2,0.2]", f"{C}warp_amplitude=0", f"{C}noise_std=0"]
# every error model at moderate strength (the benchmark's "combined")
COMBINED = [f"{C}scale_range=[0.5,2.0]", f"{C}shift_range=[-0.2,0.2]", f"{C}warp_amplitude=0.05", f"{C}noise_std=0.01",
            f"{C}curve_strength=1.0", f"{C}edge_blur=0.01", f"{C}additive_noise=0.01", f"{C}infinity_distance=500",
            f"{C}low_info_sky=0.5", f"{C}low_info_warp=0.3"]
BASE = ["predictor=synthetic", "projection.face_size=128", "paths.output_dir=/tmp/unused"]


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    both = np.isfinite(pred) & np.isfinite(gt)
    p = pred[both] * np.median(gt[both] / pred[both])
    return float(np.mean(np.abs(p - gt[both]) / gt[both]))


def ply_vertices(path) -> np.ndarray:
    """[N, 3] vertex positions of a binary little-endian PLY (whatever other vertex properties it has)."""
    head, body = path.read_bytes().split(b"end_header\n", 1)
    lines = head.decode().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("element vertex"))
    n = int(lines[start].split()[-1])
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4", "short": "<i2"}
    fields = []
    for x in lines[start + 1:]:
        if not x.startswith("property"):
            break
        _, t, name = x.split()
        fields.append((name, types[t]))
    v = np.frombuffer(body, dtype=np.dtype(fields), count=n)
    return np.stack((v["x"], v["y"], v["z"]), 1).astype(np.float64)


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    from conftest import write_scene

    return write_scene(tmp_path_factory.mktemp("street"), seed=0, height=256, kind="outdoor")


def run(scene, overrides):
    from conftest import compose
    from modules.pipeline import build_pipeline

    pipeline = build_pipeline(compose([*BASE, *overrides]))
    return pipeline.run(load_panorama(scene), str(scene)), pipeline


@pytest.fixture(scope="module")
def runs(room_scene, street):
    return {
        "room_combined": run(room_scene, COMBINED)[0],
        "room_naive": run(room_scene, [*COMBINED, "alignment=median", "refinement=none"])[0],
        "street_combined": run(street, COMBINED),
        "street_sky": run(street, [*AFFINE, f"{C}infinity_distance=500"])[0],
    }


def test_rooms_with_every_error_model_stay_accurate_and_lose_no_surface(runs, room_scene):
    gt = np.load(room_scene.with_name("distance.npy"))
    ours = runs["room_combined"].distance.numpy()
    naive = runs["room_naive"].distance.numpy()
    assert np.isfinite(ours).all()  # indoors nothing is taken for sky
    assert abs_rel(ours, gt) <= 0.015
    assert 3 * abs_rel(ours, gt) <= abs_rel(naive, gt), (abs_rel(ours, gt), abs_rel(naive, gt))


def check_street(result, gt, max_abs_rel, min_recall, max_surface_as_sky):
    d = result.distance.numpy()
    s = sky_scores(torch.from_numpy(np.isposinf(d)), torch.from_numpy(np.isposinf(gt)),
                   torch.from_numpy(np.isfinite(gt)))
    measured = (abs_rel(d, gt), s["sky_recall"], s["surface_as_sky"])
    assert measured[0] <= max_abs_rel, measured
    assert measured[1] >= min_recall, measured
    assert measured[2] <= max_surface_as_sky, measured
    assert not np.isnan(d).any() and bool(torch.isfinite(result.confidence).all())
    assert bool((result.confidence[torch.isinf(result.distance)] == 0).all())


def test_outdoor_sky_at_the_network_floor_is_found(runs, street):
    check_street(runs["street_sky"], np.load(street.with_name("distance.npy")), 0.035, 0.98, 0.005)


def test_outdoor_with_every_error_model(runs, street):
    """#12's outdoor bounds with the defaults: the first pass finds the street's sky (36 % of the pixels), so its faces
    run under two rotated copies (projection.outdoor_rotations; measured 0.0314 / 0.996 / 0.0044)."""
    result = runs["street_combined"][0]
    assert result.info["outdoor_pass"]["faces"] == 40 and result.info["num_faces"] == 40
    check_street(result, np.load(street.with_name("distance.npy")), 0.035, 0.98, 0.005)


def test_one_pass_outdoors_is_what_the_second_copy_improves(runs, street):
    """projection.outdoor_rotations=1 keeps one copy outdoors (20 faces: measured 0.0517 / 0.997 / 0.0055 on this
    street with every error model, over #12's 0.035 AbsRel); the outdoor pass beats it by a third."""
    gt = np.load(street.with_name("distance.npy"))
    one = run(street, [*COMBINED, "projection.outdoor_rotations=1"])[0]
    assert one.info["num_faces"] == 20 and "outdoor_pass" not in one.info
    assert abs_rel(runs["street_combined"][0].distance.numpy(), gt) <= 0.75 * abs_rel(one.distance.numpy(), gt)


def test_noise_floor_leaves_exact_faces_alone_and_resists_far_field_errors(runs, street):
    """alignment.noise_floor (residuals relative to sqrt(m^2 + m0^2)): faces with exact affine maps solve the same
    with and without it; with two nonsense faces, or every error model, the street's error drops (README benchmark:
    0.1008 -> 0.0519 and 0.0756 -> 0.0580 at this size)."""
    from conftest import compose
    from modules.fusion.alignment import huber_weights

    default_floor = float(compose(["predictor=synthetic"]).alignment.noise_floor)
    assert default_floor > 0  # the default has it (chosen by the stitching benchmark)
    gt = np.load(street.with_name("distance.npy"))
    # the floor itself: the far pair's effective level is lifted to m0, the near pair's barely moves
    est_a = torch.tensor([1.0, 0.01, 0.5], dtype=torch.float64)
    est_b = torch.tensor([1.1, 0.011, 0.5], dtype=torch.float64)
    _, m_rel, _ = huber_weights(est_a, est_b, torch.ones(3, dtype=torch.bool), 1.345, 0.0)
    _, m_floor, _ = huber_weights(est_a, est_b, torch.ones(3, dtype=torch.bool), 1.345, 0.2)
    assert torch.allclose(m_rel, torch.tensor([1.05, 0.0105, 0.5], dtype=torch.float64))
    assert float(m_floor[1]) == pytest.approx(0.1, rel=0.01) and float(m_floor[0]) == pytest.approx(1.05, rel=0.01)

    def street_error(overrides):  # one copy of the faces, as the README's numbers (the outdoor pass adds a second)
        return abs_rel(run(street, [*overrides, "projection.outdoor_rotations=1"])[0].distance.numpy(), gt)

    floor = [f"alignment.noise_floor={default_floor}"]
    exact = [street_error([*AFFINE, *floor]), street_error([*AFFINE, "alignment.noise_floor=0"])]
    assert exact[0] == pytest.approx(exact[1], rel=0.02, abs=2e-4), exact
    outliers = [street_error([*AFFINE, f"{C}outlier_faces=2", *floor]),
                street_error([*AFFINE, f"{C}outlier_faces=2", "alignment.noise_floor=0"])]
    assert outliers[0] <= 0.7 * outliers[1], outliers
    combined = [street_error([*COMBINED, *floor]), street_error([*COMBINED, "alignment.noise_floor=0"])]
    assert combined[0] <= 0.85 * combined[1], combined


def test_sky_halos_of_blurred_edges_go_by_the_image(runs, street):
    """fusion.sky.image_band: the halo a blurred facade leaves in the sky joins it by colour; surfaces are no worse
    (README benchmark: recall 0.969 -> 0.997 on this street with every error model; AbsRel unchanged, better with the
    surfaces next to the sky extended, whose band then starts at the snapped boundary)."""
    gt = np.load(street.with_name("distance.npy"))
    gt_sky = torch.from_numpy(np.isposinf(gt))

    def scores(result):
        d = result.distance.numpy()
        s = sky_scores(torch.from_numpy(np.isposinf(d)), gt_sky, torch.from_numpy(np.isfinite(gt)))
        return abs_rel(d, gt), s["sky_recall"], s["surface_as_sky"]

    assert runs["street_combined"][0].timings["sky"] > 0  # the final mask is timed as a stage of its own
    with_image = scores(runs["street_combined"][0])
    without = scores(run(street, [*COMBINED, "fusion.sky.image_band=0"])[0])
    assert with_image[1] >= 0.98 and with_image[1] > without[1] + 0.01, (with_image, without)
    assert with_image[0] <= 1.02 * without[0], (with_image, without)
    assert with_image[2] <= without[2] + 0.001, (with_image, without)


def test_surfaces_next_to_the_sky_lose_the_blurred_edge(street):
    """fusion.sky.edge_band: facade pixels within the networks' blur of the sky carry some of its ~0 disparity (too
    far, a halo behind every roof line); extended from their surface further in they come back (README benchmark:
    edge blur alone 0.0208 -> 0.0147 on three streets at this size), and exact faces lose nothing."""
    gt = np.load(street.with_name("distance.npy"))
    one = "projection.outdoor_rotations=1"  # the mechanism on one copy of the faces (as the README's numbers)
    blur = [*AFFINE, f"{C}edge_blur=0.01", f"{C}infinity_distance=500", one]
    exact = [*AFFINE, f"{C}infinity_distance=500", one]
    on, off = (abs_rel(run(street, [*blur, *x])[0].distance.numpy(), gt) for x in ([], ["fusion.sky.edge_band=0"]))
    assert on <= 0.8 * off, (on, off)
    on, off = (abs_rel(run(street, [*exact, *x])[0].distance.numpy(), gt) for x in ([], ["fusion.sky.edge_band=0"]))
    assert on <= off, (on, off)


@pytest.mark.parametrize("run_name", ["street_sky", "street_combined"])
def test_outdoor_mesh_has_no_floating_sky(runs, street, tmp_path, run_name):
    from modules.export.dense import export_dense_assets

    gt = np.load(street.with_name("distance.npy"))
    result = runs[run_name]
    result = result[0] if isinstance(result, tuple) else result
    res = export_dense_assets(result.distance, None, tmp_path, result.confidence, files={"formats": ["ply"], "verify": []},
                              scale={"relative": "keep"})
    vertices = ply_vertices(res.files["mesh_ply"])
    # the output has median 1: bring it to the truth's scale with the same median ratio as the metrics
    d = result.distance.numpy()
    both = np.isfinite(d) & np.isfinite(gt)
    k = np.median(gt[both] / d[both])
    radius = np.linalg.norm(vertices, axis=1) * k
    assert radius.max() <= 3 * gt[np.isfinite(gt)].max()


def test_outputs_follow_the_sky_contract(runs, street, tmp_path):
    from conftest import compose
    from modules.export.outputs import write_panorama_outputs

    result, _ = runs["street_combined"]
    cfg = compose([*BASE, *COMBINED])
    write_panorama_outputs(tmp_path, load_panorama(street), result, cfg, str(street))
    distance = np.load(tmp_path / "distance.npy")
    sky = np.asarray(Image.open(tmp_path / "sky_mask.png"))
    png = np.asarray(Image.open(tmp_path / "distance.png"))
    conf = np.load(tmp_path / "confidence.npy")
    assert sky.dtype == np.uint8 and set(np.unique(sky)) <= {0, 255}
    assert ((sky == 255) == np.isposinf(distance)).all() and (sky == 255).mean() > 0.2
    assert (png[sky == 255] == 0).all() and (png[sky == 0] > 0).all()
    assert (conf[sky == 255] == 0).all()
    assert not np.isnan(distance).any()


def test_curve_alignment_undoes_non_affine_errors_and_degrades_to_affine(room_scene):
    from modules.fusion.alignment import GlobalAffineAlignment
    from modules.fusion.curve_alignment import CurveAlignment
    from modules.fusion.faces import FacePredictions
    from modules.geo_predictors.synthetic import SyntheticPredictor
    from modules.geometry.projections import IcosahedronProjection

    cams = IcosahedronProjection(0, 64, 1.7).cameras()
    p = SyntheticPredictor(str(room_scene.with_name("distance.npy")),
                           dict(scale_range=[0.5, 2], shift_range=[-0.2, 0.2], curve_strength=1.0, seed=1))
    disp = p.predict(torch.zeros(20, 3, 64, 64), cams)
    pred = FacePredictions(disp, torch.ones_like(disp), cams)
    true = p.true_disparity(cams) * face_cos(cams)  # true inverse distance of every face pixel

    def err(aligned):
        inv = aligned.inv_distance
        k = torch.median(true[aligned.valid] / inv[aligned.valid])
        return float(((inv * k - true).abs() / true)[aligned.valid].mean())

    affine = err(GlobalAffineAlignment().align(pred))
    curve = err(CurveAlignment(degree=2).align(pred))
    assert curve < affine, (curve, affine)
    stiff = CurveAlignment(degree=2, curve_ridge=1e9)
    coef, _, _, report = stiff.solve(pred)
    assert float(coef[:, 2:].abs().max() / coef[:, 1].abs().min()) < 1e-3  # thin evidence: affine
    assert err(stiff.align(pred)) == pytest.approx(affine, rel=0.05)


def face_cos(cams):
    from modules.geometry.tangent import face_cos_to_axis

    return face_cos_to_axis(cams)  # disparity = inverse distance / cos


def test_eval_scores_surfaces_only_and_reports_sky(tmp_path):
    gt = torch.tensor([[1.0, 2.0, float("inf")], [1.0, float("inf"), float("inf")]])
    pred_sky = torch.tensor([[False, True, True], [False, False, True]])
    s = sky_scores(pred_sky, torch.isposinf(gt), torch.isfinite(gt))
    assert s["sky_precision"] == pytest.approx(2 / 3) and s["sky_recall"] == pytest.approx(2 / 3)
    assert s["surface_as_sky"] == pytest.approx(1 / 3)


class Broken:
    """Wraps the synthetic predictor and breaks some faces' predictions."""

    def __init__(self, inner, kind):
        self.inner, self.kind = inner, kind

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_with_confidence(self, images, cameras):
        d, c = self.inner.predict_with_confidence(images, cameras)
        d = d.clone()
        if self.kind == "nan":
            d[0] = float("nan")
            d[1, :10] = float("inf")
            d[2, 5:9, 5:9] = float("-inf")
        elif self.kind == "constant":
            d[3] = 0.7
        elif self.kind == "all_sky":
            d[4] = 0.0
            d[5] = 0.0
        return d, c


@pytest.mark.parametrize("kind", ["nan", "constant", "all_sky"])
def test_broken_face_predictions_give_a_clear_result(room_scene, kind):
    from conftest import compose
    from modules.pipeline import build_pipeline

    pipeline = build_pipeline(compose(["predictor=synthetic", "projection.face_size=48",
                                       "paths.output_dir=/tmp/unused", *AFFINE]))
    pipeline.predictor = Broken(pipeline.predictor, kind)
    result = pipeline.run(load_panorama(room_scene), str(room_scene))
    d = result.distance
    assert not bool(torch.isnan(d).any()) and bool(torch.isfinite(result.confidence).all())
    assert float(torch.isfinite(d).double().mean()) > 0.9  # the other faces still give the room


def test_a_panorama_that_is_ninety_percent_sky(tmp_path):
    from conftest import compose
    from modules.pipeline import build_pipeline

    H = 64
    rgb, distance = render_erp(make_scene("outdoor", 2), H)
    distance[: int(0.9 * H)] = np.inf  # only the lowest rows see the ground
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "distance.npy", distance)
    pipeline = build_pipeline(compose(["predictor=synthetic", "projection.face_size=32",
                                       "paths.output_dir=/tmp/unused", *COMBINED]))
    result = pipeline.run(load_panorama(tmp_path / "rgb.png"), str(tmp_path / "rgb.png"))
    d = result.distance
    assert not bool(torch.isnan(d).any()) and bool(torch.isfinite(result.confidence).all())
    assert float(torch.isinf(d).double().mean()) > 0.8
    assert bool(torch.isfinite(d[-2:]).any())


def test_sky_can_go_on_a_far_dome(tmp_path):
    from modules.export.dense import export_dense_assets

    d = torch.full((16, 32), 2.0)
    d[:6] = float("inf")
    # no skirt: its vertices continue the dome's edge on a tangent plane, which is not what is measured here
    kw = dict(files={"formats": ["ply"], "verify": []}, scale={"relative": "keep"}, mesh={"skirt": False})

    def radii(out, **extra):
        res = export_dense_assets(d, None, tmp_path / out, **kw, **extra)
        return np.linalg.norm(ply_vertices(res.files["mesh_ply"]), axis=1)

    dropped = radii("drop")
    dome = radii("dome", sky_dome=5.0)
    assert dropped.max() == pytest.approx(2.0, rel=1e-4)
    assert dome.max() == pytest.approx(10.0, rel=1e-4) and len(dome) > len(dropped)
