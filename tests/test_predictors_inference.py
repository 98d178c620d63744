"""predict() end to end on face batches with tiny configs of the real model classes (random weights)."""

import pytest
import torch

from modules.geo_predictors.base import DepthPredictor
from modules.geo_predictors.depth_anything import DepthAnythingV2Predictor
from modules.geo_predictors.midas import MidasPredictor
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs
from conftest import spread_weights

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

CASES = [(MidasPredictor, "beit_large_512"), (MidasPredictor, "swin2_tiny_256"), (DepthAnythingV2Predictor, "small")]


def _tiny(cls, variant, **extra):
    kwargs = tiny_predictor_kwargs(cls.predictor_name, variant)
    kwargs.update(extra)
    return cls(variant=variant, **kwargs)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0].predictor_name}-{c[1]}")
def predictor(request):
    cls, variant = request.param
    pred = _tiny(cls, variant, batch_size=2)
    spread_weights(pred.model)
    return pred


@pytest.fixture(scope="module")
def faces():
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 3, 40, 40, generator=g)


def test_predict_shape_dtype_device(predictor, faces):
    assert isinstance(predictor, DepthPredictor)
    out = predictor.predict(faces)
    assert out.shape == (5, 40, 40) and out.dtype == torch.float32 and out.device == faces.device
    assert torch.isfinite(out).all() and out.std() > 0
    assert not out.is_inference()  # later stages may use it freely
    disp, conf = predictor.predict_with_confidence(faces)
    assert torch.equal(disp, out) and torch.equal(conf, torch.ones_like(out))


def test_chunking_does_not_change_results(predictor, faces):
    full = predictor.predict(faces)
    old = predictor.batch_size
    try:
        predictor.batch_size = 5
        torch.testing.assert_close(predictor.predict(faces), full, rtol=1e-4, atol=1e-4 * float(full.abs().max()))
    finally:
        predictor.batch_size = old
    # each face is predicted independently of the others in its chunk
    torch.testing.assert_close(predictor.predict(faces[3:4]), full[3:4], rtol=1e-4, atol=1e-4 * float(full.abs().max()))


def test_non_square_faces_and_float64_input(predictor, faces):
    rect = torch.nn.functional.interpolate(faces[:2], size=(36, 52), mode="bilinear").double()
    out = predictor.predict(rect)
    assert out.shape == (2, 36, 52) and out.dtype == torch.float32


def test_network_size_follows_the_variant_rule(predictor):
    size = predictor.input_size
    if predictor.variant.keep_aspect_ratio:
        h, w = predictor.network_size((40, 80))
        assert h % predictor.variant.multiple_of == 0 and w % predictor.variant.multiple_of == 0 and w > h
    else:
        assert predictor.network_size((40, 80)) == (size, size)


def test_describe_records_what_meta_json_needs(predictor):
    meta = predictor.describe()
    for key in ("variant", "weights", "weights_source", "licence", "input_size", "device", "precision", "batch_size"):
        assert key in meta
    assert meta["random_weights"] is True and meta["allow_random_weights"] is True
    assert meta["model_overrides"] and meta["device"] == "cpu"


def test_empty_batch_and_bad_input(predictor):
    assert predictor.predict(torch.zeros(0, 3, 16, 16)).shape == (0, 16, 16)
    with pytest.raises(ValueError, match=r"\[B, 3, h, w\]"):
        predictor.predict(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="float"):
        predictor.predict(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_random_init_is_seeded(faces):
    a = _tiny(DepthAnythingV2Predictor, "small", random_seed=5)
    b = _tiny(DepthAnythingV2Predictor, "small", random_seed=5)
    c = _tiny(DepthAnythingV2Predictor, "small", random_seed=6)
    sa, sb, sc = (dict(p.model.named_parameters()) for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_precision_options_on_cpu(faces):
    bf16 = _tiny(DepthAnythingV2Predictor, "small", precision="bf16")
    assert bf16.effective_precision == "bf16"
    assert bf16.predict(faces[:2]).dtype == torch.float32
    fp16 = _tiny(DepthAnythingV2Predictor, "small", precision="fp16")
    assert fp16.effective_precision == "fp32" and fp16.describe()["precision"] == "fp16"
    with pytest.raises(ValueError, match="precision"):
        _tiny(DepthAnythingV2Predictor, "small", precision="int8")


def test_constructor_validation():
    with pytest.raises(ValueError, match="unknown variant"):
        MidasPredictor(variant="beit_huge")
    with pytest.raises(ValueError, match="unknown key.*neck_sizes"):
        _tiny(MidasPredictor, "beit_large_512", model_overrides={"neck_sizes": [1]})
    with pytest.raises(ValueError, match="unknown key.*hidden_sise"):
        _tiny(DepthAnythingV2Predictor, "small", model_overrides={"backbone_config": {"hidden_sise": 8}})
    with pytest.raises(ValueError, match="batch_size"):
        _tiny(DepthAnythingV2Predictor, "small", batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            _tiny(DepthAnythingV2Predictor, "small", device="cuda")
