"""Network speed options with tiny configs of the real classes: weights in the run's dtype, SDPA attention,
torch.compile wiring, batch_size auto."""

import pytest
import torch

from modules.errors import UserError
from modules.geo_predictors.depth_anything import DepthAnythingV2Predictor
from modules.geo_predictors.midas import MidasPredictor
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs
from conftest import spread_weights

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _tiny(cls, variant, **extra):
    return cls(variant=variant, **{**tiny_predictor_kwargs(cls.predictor_name, variant), **extra})


def _faces(n=3, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_weights_are_loaded_in_the_runs_dtype(tmp_path):
    bf16 = _tiny(DepthAnythingV2Predictor, "small", precision="bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert bf16.predict(_faces()).dtype == torch.float32  # outputs stay float32
    fp32 = _tiny(DepthAnythingV2Predictor, "small")
    spread_weights(fp32.model)  # outputs of a fresh random init are ~0 (ReLU head): give them a range to compare
    assert {p.dtype for p in fp32.model.parameters()} == {torch.float32}
    # a Hugging Face directory: from_pretrained(dtype=...), not fp32 then a cast under autocast
    fp32.model.save_pretrained(tmp_path / "hub")
    loaded = DepthAnythingV2Predictor(variant="small", weights=str(tmp_path / "hub"), precision="bf16", device="cpu",
                                      allow_download=False, input_size=fp32.input_size)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    a, b = loaded.predict(_faces()), fp32.predict(_faces())
    assert float(b.std()) > 0.01
    assert float((a - b).abs().mean()) < 0.02 * float(b.abs().mean())  # the same network, in bf16


def test_sdpa_attention_where_the_architecture_has_it():
    assert _tiny(MidasPredictor, "beit_large_512").describe()["attention"]["backbone"] == "sdpa"
    assert _tiny(DepthAnythingV2Predictor, "large").describe()["attention"]["backbone"] == "sdpa"
    assert _tiny(MidasPredictor, "swin2_tiny_256").describe()["attention"]["backbone"] == "eager"  # Swin V2 has none


def test_compile_wraps_the_network(monkeypatch):
    compiled = []

    def fake_compile(model, **kwargs):
        compiled.append(model)

        def run(**inputs):
            compiled.append("called")
            return model(**inputs)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    pred = _tiny(DepthAnythingV2Predictor, "small", compile=True)
    assert compiled == [pred.model]
    pred.predict(_faces())
    assert "called" in compiled and pred.describe()["compile"] is True
    assert _tiny(DepthAnythingV2Predictor, "small").describe()["compile"] is False


def test_batch_size_auto_on_the_cpu_is_fixed_and_gives_the_same_result():
    auto = _tiny(DepthAnythingV2Predictor, "small", batch_size="auto")
    fixed = _tiny(DepthAnythingV2Predictor, "small", batch_size=1)
    spread_weights(auto.model)
    spread_weights(fixed.model)
    faces = _faces(5)
    a, b = auto.predict(faces), fixed.predict(faces)
    assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()))  # batched as 4 + 1 vs 1 x 5: float rounding
    assert auto.batch_size_for((28, 28)) == 4
    with pytest.raises(UserError, match="batch_size"):
        _tiny(DepthAnythingV2Predictor, "small", batch_size="most")
