"""Weight resolution: search order, downloads, offline errors, random weights only when allowed."""

import pytest
import torch

from modules.errors import UserError
from modules.geo_predictors import weights as W
from modules.geo_predictors.midas import MidasPredictor
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SPEC = W.WeightsSpec(
    predictor="midas_v31",
    variant="beit_large_512",
    family="MiDaS v3.1",
    hf_id="Intel/dpt-beit-large-512",
    upstream_file="dpt_beit_large_512.pt",
    upstream_url="https://github.com/isl-org/MiDaS/releases/download/v3_1/dpt_beit_large_512.pt",
)


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and no real network access from these tests."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def no_network(repo_id, checkpoint_dir):
        raise ConnectionError("network unreachable (test)")

    monkeypatch.setattr(W, "download_hf_snapshot", no_network)
    monkeypatch.setattr(W, "hub_unreachable", lambda timeout=5.0: None)  # the probe passes; the download fails


def _fake_hf_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_offline_and_missing_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(W.WeightsNotFoundError) as err:
        W.resolve_weights(SPEC, None, tmp_path, allow_download=True, allow_random_weights=False)
    text = str(err.value)
    assert "MiDaS v3.1 weights for variant 'beit_large_512' not found" in text
    assert str(tmp_path / "Intel" / "dpt-beit-large-512") in text and "dpt_beit_large_512.pt" in text
    assert "HF_HUB_OFFLINE" in text
    assert "python -m tools.download_checkpoints --predictor midas_v31 --variant beit_large_512" in text
    assert isinstance(err.value, FileNotFoundError)
    assert isinstance(err.value, UserError)  # the runner prints it without a traceback


def test_failed_download_is_reported_with_its_reason(tmp_path):
    with pytest.raises(W.WeightsNotFoundError, match="download of Intel/dpt-beit-large-512 failed.*unreachable"):
        W.resolve_weights(SPEC, None, tmp_path, allow_download=True, allow_random_weights=False)
    with pytest.raises(W.WeightsNotFoundError, match="allow_download: false"):
        W.resolve_weights(SPEC, None, tmp_path, allow_download=False, allow_random_weights=False)


def test_predictor_with_missing_weights_raises_instead_of_going_random(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kwargs = tiny_predictor_kwargs("midas_v31", "beit_large_512")
    kwargs.update(weights=None, allow_random_weights=False, allow_download=True)
    with pytest.raises(W.WeightsNotFoundError, match="tools.download_checkpoints"):
        MidasPredictor(variant="beit_large_512", checkpoint_dir=str(tmp_path), **kwargs)
    kwargs["weights"] = "random"
    with pytest.raises(ValueError, match="allow_random_weights"):
        MidasPredictor(variant="beit_large_512", checkpoint_dir=str(tmp_path), **kwargs)


def test_random_weights_only_when_allowed_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kwargs = tiny_predictor_kwargs("midas_v31", "beit_large_512")
    kwargs.update(weights=None)  # search first, fall back to random because it is allowed
    pred = MidasPredictor(variant="beit_large_512", checkpoint_dir=str(tmp_path), **kwargs)
    meta = pred.describe()
    assert meta["random_weights"] is True and meta["allow_random_weights"] is True
    assert meta["weights_source"] == "random" and meta["random_seed"] == 0
    assert meta["licence"] == "MIT" and meta["variant"] == "beit_large_512"


def test_search_order_prefers_hf_dir_then_upstream_file_then_cache(tmp_path, monkeypatch):
    upstream = tmp_path / "dpt_beit_large_512.pt"
    torch.save({"x": torch.zeros(1)}, upstream)
    found = W.resolve_weights(SPEC, None, tmp_path, allow_download=False, allow_random_weights=False)
    assert found.source == "state_dict_file" and found.path == upstream

    hf_dir = _fake_hf_dir(tmp_path / "Intel" / "dpt-beit-large-512")
    found = W.resolve_weights(SPEC, None, tmp_path, allow_download=False, allow_random_weights=False)
    assert found.source == "hf_dir" and found.path == hf_dir and found.repo_id == "Intel/dpt-beit-large-512"

    cached = _fake_hf_dir(tmp_path / "cache_snapshot")
    monkeypatch.setattr(W, "_hf_cache_dir", lambda repo_id: cached if repo_id == "Intel/dpt-swinv2-tiny-256" else None)
    found = W.resolve_weights(
        SPEC, "Intel/dpt-swinv2-tiny-256", tmp_path, allow_download=False, allow_random_weights=False
    )
    assert found.source == "hf_dir" and found.path == cached


def test_download_when_online_goes_into_checkpoint_dir(tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, checkpoint_dir):
        calls.append(repo_id)
        return _fake_hf_dir(W.hf_dir_for(checkpoint_dir, repo_id))

    monkeypatch.setattr(W, "download_hf_snapshot", fake_download)
    found = W.resolve_weights(SPEC, None, tmp_path, allow_download=True, allow_random_weights=False)
    assert calls == ["Intel/dpt-beit-large-512"]
    assert found.source == "hf_dir" and found.path == tmp_path.resolve() / "Intel" / "dpt-beit-large-512"


def test_explicit_paths(tmp_path):
    (tmp_path / "mine.pth").write_bytes(b"")
    found = W.resolve_weights(SPEC, "mine.pth", tmp_path, allow_download=False, allow_random_weights=False)
    assert found.source == "state_dict_file" and found.path == tmp_path.resolve() / "mine.pth"
    with pytest.raises(W.WeightsNotFoundError, match="not found"):
        W.resolve_weights(SPEC, "missing.pt", tmp_path, allow_download=True, allow_random_weights=False)
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(W.WeightsNotFoundError, match="not a Hugging Face model directory"):
        W.resolve_weights(
            SPEC, str(tmp_path / "not_a_model"), tmp_path, allow_download=False, allow_random_weights=False
        )


def test_state_dict_files_are_read_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"a": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(W.load_state_dict_file(tmp_path / "ok.pt")["a"], torch.ones(2))
    torch.save({"a": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights-only"):
        W.load_state_dict_file(tmp_path / "evil.pt")
