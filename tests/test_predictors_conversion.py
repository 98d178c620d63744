"""Upstream checkpoint key mapping: round trips through upstream-named files for every supported file kind.

An upstream-named state dict is made from a (tiny, randomly initialised) transformers model, saved as the upstream
release file would be, loaded back by the predictor through the automatic conversion, and must give identical
outputs (up to float rounding: two loads of the same weights may run different CPU kernels, e.g. transformers 5
memory-maps safetensors unaligned; a wrong mapping changes outputs by orders of magnitude more, which
``test_tolerance_catches_a_wrong_mapping`` checks). Entries the upstream files carry but the transformers models recompute are added to the file, so the
converter's handling of them is exercised too.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.geo_predictors.checkpoint_conversion import (
    CheckpointFormatError,
    detect_upstream_kind,
    hf_to_upstream,
    upstream_architecture,
    upstream_to_hf,
)
from modules.geo_predictors.depth_anything import DepthAnythingV2Predictor
from modules.geo_predictors.midas import MidasPredictor
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

def _load_tool(name):
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _load_tool("convert_checkpoint").convert

CASES = {
    # upstream file kind: (predictor class, variant, keys a real upstream file of that kind holds)
    "midas_beit": (
        MidasPredictor,
        "beit_large_512",
        [
            "pretrained.model.cls_token",
            "pretrained.model.blocks.0.attn.qkv.weight",
            "pretrained.model.blocks.0.attn.q_bias",
            "pretrained.model.blocks.3.gamma_2",
            "pretrained.model.blocks.1.attn.relative_position_bias_table",
            "pretrained.act_postprocess1.0.project.0.weight",
            "pretrained.act_postprocess1.4.weight",
            "pretrained.act_postprocess4.4.bias",
            "scratch.layer1_rn.weight",
            "scratch.refinenet4.resConfUnit1.conv1.weight",
            "scratch.refinenet1.out_conv.bias",
            "scratch.output_conv.0.weight",
            "scratch.output_conv.4.bias",
        ],
    ),
    "midas_swin2": (
        MidasPredictor,
        "swin2_tiny_256",
        [
            "pretrained.model.patch_embed.proj.weight",
            "pretrained.model.patch_embed.norm.bias",
            "pretrained.model.layers.0.blocks.1.attn.qkv.weight",
            "pretrained.model.layers.3.blocks.1.attn.logit_scale",
            "pretrained.model.layers.2.blocks.0.attn.cpb_mlp.2.weight",
            "pretrained.model.layers.2.downsample.reduction.weight",
            "pretrained.model.layers.0.downsample.norm.weight",
            "scratch.layer4_rn.weight",
            "scratch.output_conv.2.weight",
        ],
    ),
    "depth_anything_v2_vits": (
        DepthAnythingV2Predictor,
        "small",
        [
            "pretrained.cls_token",
            "pretrained.pos_embed",
            "pretrained.mask_token",
            "pretrained.blocks.0.attn.qkv.bias",
            "pretrained.blocks.3.ls2.gamma",
            "pretrained.norm.weight",
            "depth_head.projects.0.weight",
            "depth_head.resize_layers.3.weight",
            "depth_head.scratch.refinenet4.out_conv.weight",
            "depth_head.scratch.output_conv1.weight",
            "depth_head.scratch.output_conv2.2.bias",
        ],
    ),
    "depth_anything_v2_vitb": (DepthAnythingV2Predictor, "base", ["pretrained.blocks.3.attn.qkv.weight"]),
    "depth_anything_v2_vitl": (DepthAnythingV2Predictor, "large", ["pretrained.blocks.7.mlp.fc2.bias"]),
}
NOT_IN_UPSTREAM = ["pretrained.act_postprocess3.4.weight", "depth_head.resize_layers.2.weight"]


def _tiny(cls, variant, **extra):
    kwargs = tiny_predictor_kwargs(cls.predictor_name, variant)
    kwargs.update(extra)
    return cls(variant=variant, **kwargs)


#: two loads of the same weights agree to this, relative to the largest output: other float32 CPU kernels moved
#: outputs by 3.3e-6 (swin2, transformers 5.24); query/key swapped in one layer moves them by >= 2e-4
TOL = 3e-5


def assert_same_outputs(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOL * float(expected.abs().max()))


def _randomize(model, seed):
    """Spread the parameters so that the outputs vary (a fresh DPT head outputs ~0 after its ReLU)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            if name.endswith(("head.head.4.bias", "head.conv3.bias")):
                p.fill_(1.0)


def _upstream_extras(sd, kind):
    """Entries real upstream files also hold (recomputed buffers, timm classifier parts)."""
    extra = {}
    for key in list(sd):
        if kind == "midas_beit" and key.endswith("attn.relative_position_bias_table"):
            extra[key.replace("relative_position_bias_table", "k_bias")] = torch.zeros(4)
            extra[key.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(
                5, 5, dtype=torch.long
            )
        if kind == "midas_swin2" and key.endswith("attn.logit_scale"):
            extra[key.replace("logit_scale", "relative_position_index")] = torch.zeros(4, dtype=torch.long)
            extra[key.replace("logit_scale", "relative_coords_table")] = torch.zeros(1, 7, 7, 2)
    if kind == "midas_beit":
        extra.update(
            {"pretrained.model.fc_norm.weight": torch.ones(3), "pretrained.model.head.weight": torch.ones(2, 3)}
        )
    if kind == "midas_swin2":
        extra.update({"pretrained.model.norm.weight": torch.ones(3), "pretrained.model.head.bias": torch.ones(2)})
    return extra


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 48, 40, generator=g)


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory, images):
    """(name, predictor with randomised tiny weights, its outputs, upstream-named state dict, Hub-named state dict)."""
    name = request.param
    cls, variant, _ = CASES[name]
    pred = _tiny(cls, variant)
    _randomize(pred.model, seed=len(name))
    out = pred.predict(images)
    hub_dir = tmp_path_factory.mktemp(f"hub_{name}")
    pred.model.save_pretrained(hub_dir)
    hub = load_file(os.path.join(hub_dir, "model.safetensors"))
    return name, pred, out, hf_to_upstream(hub, pred.variant.upstream_kind), hub, hub_dir


def test_upstream_names_are_those_of_the_release_files(case):
    name, pred, _, upstream, hub, _ = case
    cls, variant, expected = CASES[name]
    assert set(expected) <= set(upstream)
    assert not set(NOT_IN_UPSTREAM) & set(upstream)
    assert detect_upstream_kind(upstream) == pred.variant.upstream_kind
    # fused qkv: one upstream entry for three Hub entries per block
    n_qkv = sum(k.endswith("attn.qkv.weight") for k in upstream)
    assert n_qkv > 0 and len(hub) - len(upstream) == 2 * n_qkv * (2 if name.startswith("depth_anything") else 1)


def test_mapping_is_a_bijection_on_the_keys(case):
    _, pred, _, upstream, hub, _ = case
    back = upstream_to_hf(upstream, pred.variant.upstream_kind)
    assert set(back) == set(hub)
    assert all(torch.equal(back[k], hub[k]) for k in hub)


def test_upstream_file_loads_back_with_identical_outputs(case, tmp_path, images):
    name, pred, out, upstream, _, _ = case
    kind = pred.variant.upstream_kind
    assert out.std() > 1e-3  # the comparison below is not between constants
    sd = {**upstream, **_upstream_extras(upstream, kind)}
    payload = {"model": sd, "optimizer": {"step": torch.tensor(3)}} if kind == "midas_beit" else sd
    torch.save(payload, tmp_path / pred.variant.upstream_file)
    # weights: null finds the upstream file in checkpoint_dir and converts it
    cls, variant, _ = CASES[name]
    loaded = _tiny(cls, variant, weights=None, checkpoint_dir=str(tmp_path), allow_random_weights=False)
    assert loaded.describe()["weights_source"] == "state_dict_file" and not loaded.describe()["random_weights"]
    assert_same_outputs(loaded.predict(images), out)


def test_hub_directory_and_hub_named_file_load_identically(case, tmp_path, images):
    name, pred, out, _, hub, hub_dir = case
    cls, variant, _ = CASES[name]
    from_dir = _tiny(cls, variant, weights=str(hub_dir), allow_random_weights=False)
    assert from_dir.describe()["weights_source"] == "hf_dir"
    assert_same_outputs(from_dir.predict(images), out)
    save_file(hub, tmp_path / "hub_named.safetensors")
    from_file = _tiny(cls, variant, weights=str(tmp_path / "hub_named.safetensors"), allow_random_weights=False)
    assert_same_outputs(from_file.predict(images), out)


def test_tolerance_catches_a_wrong_mapping(case, tmp_path, images):
    """The subtlest wrong mapping, query and key of one attention layer swapped (a wrong split order of a fused
    qkv), moves the outputs beyond TOL; the key-level bijection test above catches it independently."""
    name, pred, out, _, hub, _ = case
    cls, variant, _ = CASES[name]
    query = min(k for k in hub if k.endswith("query.weight"))
    key = query.replace("query.weight", "key.weight")
    wrong = {**hub, query: hub[key], key: hub[query]}
    save_file(wrong, tmp_path / "wrong.safetensors")
    loaded = _tiny(cls, variant, weights=str(tmp_path / "wrong.safetensors"), allow_random_weights=False)
    with pytest.raises(AssertionError):
        assert_same_outputs(loaded.predict(images), out)


def test_convert_tool_writes_a_loadable_hf_directory(tmp_path, images):
    cls, variant, _ = CASES["depth_anything_v2_vits"]
    pred = _tiny(cls, variant)
    _randomize(pred.model, seed=7)
    out = pred.predict(images)
    pred.model.save_pretrained(tmp_path / "hub")
    upstream = hf_to_upstream(load_file(tmp_path / "hub" / "model.safetensors"), "depth_anything_v2")
    source = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(upstream, source)
    overrides = tiny_predictor_kwargs(cls.predictor_name, variant)["model_overrides"]
    target = convert(source, tmp_path / "converted" / "da_s", "depth_anything_v2", variant, overrides)
    assert (target / "config.json").is_file() and json.loads((target / "config.json").read_text())[
        "model_type"
    ] == "depth_anything"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    loaded = _tiny(cls, variant, weights=str(target), allow_random_weights=False)
    assert_same_outputs(loaded.predict(images), out)


def test_bad_upstream_files_give_clear_errors(tmp_path):
    pred = _tiny(DepthAnythingV2Predictor, "small")
    pred.model.save_pretrained(tmp_path / "hub")
    upstream = hf_to_upstream(load_file(tmp_path / "hub" / "model.safetensors"), "depth_anything_v2")
    assert upstream_architecture(upstream, "depth_anything_v2") == {"hidden_size": 24, "num_layers": 4}

    with pytest.raises(CheckpointFormatError, match="not recognised.*pretrained.blocks.0.surprise"):
        upstream_to_hf({**upstream, "pretrained.blocks.0.surprise": torch.zeros(1)}, "depth_anything_v2")

    # a Depth Anything file given to MiDaS
    torch.save(upstream, tmp_path / "da.pth")
    with pytest.raises(CheckpointFormatError, match="depth_anything_v2 checkpoint.*pick the variant"):
        _tiny(MidasPredictor, "beit_large_512", weights=str(tmp_path / "da.pth"), allow_random_weights=False)

    # a ViT-S file given to the tiny "base" architecture (hidden 32)
    with pytest.raises(CheckpointFormatError, match="backbone of .*24.*expects.*32"):
        _tiny(DepthAnythingV2Predictor, "base", weights=str(tmp_path / "da.pth"), allow_random_weights=False)

    # a file missing a parameter is refused, never completed with random values
    incomplete = dict(upstream)
    incomplete.pop("depth_head.scratch.output_conv1.weight")
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(CheckpointFormatError, match="missing 1"):
        _tiny(DepthAnythingV2Predictor, "small", weights=str(tmp_path / "incomplete.pth"), allow_random_weights=False)

    # a Hugging Face directory of another size
    with pytest.raises(CheckpointFormatError, match="other shapes"):
        _tiny(
            DepthAnythingV2Predictor,
            "small",
            weights=str(tmp_path / "hub"),
            allow_random_weights=False,
            model_overrides={"fusion_hidden_size": 8},
        )

    with pytest.raises(CheckpointFormatError, match="not a supported upstream checkpoint"):
        detect_upstream_kind({"encoder.weight": torch.zeros(1)})
