"""Key mapping between the upstream release checkpoints and the Hugging Face (transformers) checkpoint format.

Supported upstream files (``kind``):

- ``midas_beit``  MiDaS v3.1 DPT-BEiT (``dpt_beit_large_512.pt``, ``dpt_beit_large_384.pt``, ``dpt_beit_base_384.pt``):
  timm BEiT under ``pretrained.model.*``, readout/reassemble under ``pretrained.act_postprocess{1..4}.*``,
  DPT neck and head under ``scratch.*``.
- ``midas_swin2`` MiDaS v3.1 DPT-SwinV2 (``dpt_swin2_{large,base}_384.pt``, ``dpt_swin2_tiny_256.pt``):
  timm SwinV2 under ``pretrained.model.*`` (no reassemble stage: the hierarchy gives the four scales), ``scratch.*``.
- ``depth_anything_v2`` Depth Anything V2 (``depth_anything_v2_vit{s,b,l}.pth``): DINOv2 under ``pretrained.*``,
  DPT head under ``depth_head.*``.

The Hugging Face side uses the names of the Hub checkpoints (``Intel/dpt-beit-large-512``,
``depth-anything/Depth-Anything-V2-Large-hf``, ...) - the names ``save_pretrained`` writes - so the mapping does not
depend on how a given transformers release names its modules internally: converted state dicts are loaded through
``from_pretrained``, like the Hub files.

The mapping in words (``{i}`` is an index, ``{p}`` is ``weight`` or ``bias``; upstream -> Hugging Face):

- fused ``attn.qkv.weight`` (and DINOv2's ``qkv.bias``): split in three along dim 0 -> ``query``, ``key``, ``value``;
  BEiT/SwinV2 ``attn.q_bias`` / ``attn.v_bias`` -> ``query.bias`` / ``value.bias`` (the key has no bias).
- layer scales: BEiT ``gamma_1``/``gamma_2`` -> ``lambda_1``/``lambda_2``; DINOv2 ``ls1.gamma``/``ls2.gamma`` ->
  ``layer_scale1.lambda1``/``layer_scale2.lambda1``; block norms/MLPs/projections renamed one to one.
- MiDaS BEiT readout + reassemble: ``pretrained.act_postprocess{i+1}.0.project.0`` ->
  ``neck.reassemble_stage.readout_projects.{i}.0``; ``.3`` / ``.4`` -> ``layers.{i}.projection`` / ``.resize``.
- Depth Anything reassemble: ``depth_head.projects.{i}`` / ``depth_head.resize_layers.{i}`` ->
  ``neck.reassemble_stage.layers.{i}.projection`` / ``.resize`` (no readout: the CLS token is not used).
- DPT neck: ``scratch.layer{i+1}_rn`` -> ``neck.convs.{i}``; ``scratch.refinenet{4-i}`` ->
  ``neck.fusion_stage.layers.{i}`` (refinenet4 and fusion layer 0 are the deepest); in it ``resConfUnit{k}.conv{c}`` ->
  ``residual_layer{k}.convolution{c}`` and ``out_conv`` -> ``projection``.
- heads (they differ): MiDaS ``scratch.output_conv.{0,2,4}`` -> ``head.head.{0,2,4}``; Depth Anything
  ``depth_head.scratch.output_conv1`` / ``output_conv2.0`` / ``output_conv2.2`` -> ``head.conv1`` / ``.conv2`` /
  ``.conv3``.

Upstream entries that the Hugging Face models do not hold are dropped: recomputed buffers
(``relative_position_index``, ``relative_coords_table``, ``attn_mask``, BEiT's zero ``k_bias``, which softmax ignores
anyway) and the unused ImageNet classifier parts of the timm backbones (``head``, ``fc_norm``, ``norm``). Any other
unknown key is an error, never silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from .errors import CheckpointFormatError

__all__ = [
    "UPSTREAM_KINDS",
    "CheckpointFormatError",
    "detect_upstream_kind",
    "hf_to_upstream",
    "is_hf_state_dict",
    "unwrap_state_dict",
    "upstream_architecture",
    "upstream_to_hf",
]


# ----------------------------------------------------------------------------------------------------------------------
# A small two-way rule engine. A pattern is a key with placeholders: "{i}" (a number), "{i+1}" / "{4-i}" (that number
# shifted or mirrored on this side), "{p}" (weight|bias). Variables are shared by the two sides of a rule.
# ----------------------------------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(?:(\d+)-)?([a-z])(?:\+(\d+))?\}")


@dataclass(frozen=True)
class _Side:
    regex: re.Pattern
    template: str
    exprs: tuple[tuple[str, int | None, int], ...]  # (variable, mirror constant or None, offset)

    @classmethod
    def compile(cls, pattern: str) -> "_Side":
        parts, exprs, pos = [], [], 0
        for n, m in enumerate(_PLACEHOLDER.finditer(pattern)):
            parts.append(re.escape(pattern[pos : m.start()]))
            var = m.group(2)
            parts.append(f"(?P<g{n}>weight|bias)" if var == "p" else f"(?P<g{n}>\\d+)")
            mirror = int(m.group(1)) if m.group(1) else None
            exprs.append((var, mirror, int(m.group(3) or 0)))
            pos = m.end()
        parts.append(re.escape(pattern[pos:]))
        template = _PLACEHOLDER.sub(lambda m: "{}", pattern)
        return cls(re.compile("".join(parts) + r"\Z"), template, tuple(exprs))

    def match(self, key: str) -> dict[str, str | int] | None:
        m = self.regex.match(key)
        if m is None:
            return None
        values: dict[str, str | int] = {}
        for n, (var, mirror, offset) in enumerate(self.exprs):
            raw = m.group(f"g{n}")
            if var == "p":
                value: str | int = raw
            else:
                shown = int(raw)
                value = (mirror - shown) if mirror is not None else (shown - offset)
                if value < 0:
                    return None
            if values.setdefault(var, value) != value:
                return None
        return values

    def fill(self, values: Mapping[str, str | int]) -> str:
        shown = []
        for var, mirror, offset in self.exprs:
            v = values[var]
            shown.append(v if var == "p" else ((mirror - v) if mirror is not None else (v + offset)))
        return self.template.format(*shown)


@dataclass(frozen=True)
class _Rule:
    upstream: _Side
    hf: tuple[_Side, ...]  # one side: plain rename; three: fused qkv split along dim 0

    def to_hf(self, key: str, sd: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        values = self.upstream.match(key)
        if values is None:
            return None
        tensor = sd[key]
        if len(self.hf) == 1:
            return {self.hf[0].fill(values): tensor}
        if tensor.shape[0] % len(self.hf):
            raise CheckpointFormatError(f"fused tensor '{key}' of shape {tuple(tensor.shape)} cannot be split in 3")
        parts = tensor.chunk(len(self.hf), dim=0)
        return {side.fill(values): part.clone() for side, part in zip(self.hf, parts, strict=True)}


def _rule(upstream: str, *hf: str) -> _Rule:
    return _Rule(_Side.compile(upstream), tuple(_Side.compile(h) for h in hf))


def _qkv(upstream: str, hf_prefix: str, param: str) -> _Rule:
    return _rule(upstream, *(f"{hf_prefix}{name}.{param}" for name in ("query", "key", "value")))


# DPT neck + MiDaS head (shared by BEiT and SwinV2 MiDaS); ``prefix`` is "" for MiDaS, "depth_head." for Depth Anything.
def _dpt_fusion_rules(prefix: str) -> list[_Rule]:
    fusion = "neck.fusion_stage.layers.{i}."
    return [
        _rule(prefix + "scratch.layer{i+1}_rn.weight", "neck.convs.{i}.weight"),
        _rule(prefix + "scratch.refinenet{4-i}.out_conv.{p}", fusion + "projection.{p}"),
        _rule(
            prefix + "scratch.refinenet{4-i}.resConfUnit{k}.conv{c}.{p}",
            fusion + "residual_layer{k}.convolution{c}.{p}",
        ),
    ]


_MIDAS_HEAD = [_rule("scratch.output_conv.{i}.{p}", "head.head.{i}.{p}")]

_BEIT_BLOCK_UP = "pretrained.model.blocks.{i}."
_BEIT_BLOCK_HF = "backbone.encoder.layer.{i}."
_MIDAS_BEIT_RULES = [
    _rule("pretrained.model.cls_token", "backbone.embeddings.cls_token"),
    _rule("pretrained.model.patch_embed.proj.{p}", "backbone.embeddings.patch_embeddings.projection.{p}"),
    _rule(_BEIT_BLOCK_UP + "gamma_1", _BEIT_BLOCK_HF + "lambda_1"),
    _rule(_BEIT_BLOCK_UP + "gamma_2", _BEIT_BLOCK_HF + "lambda_2"),
    _rule(_BEIT_BLOCK_UP + "norm1.{p}", _BEIT_BLOCK_HF + "layernorm_before.{p}"),
    _rule(_BEIT_BLOCK_UP + "norm2.{p}", _BEIT_BLOCK_HF + "layernorm_after.{p}"),
    _rule(_BEIT_BLOCK_UP + "mlp.fc1.{p}", _BEIT_BLOCK_HF + "intermediate.dense.{p}"),
    _rule(_BEIT_BLOCK_UP + "mlp.fc2.{p}", _BEIT_BLOCK_HF + "output.dense.{p}"),
    _rule(_BEIT_BLOCK_UP + "attn.proj.{p}", _BEIT_BLOCK_HF + "attention.output.dense.{p}"),
    _rule(
        _BEIT_BLOCK_UP + "attn.relative_position_bias_table",
        _BEIT_BLOCK_HF + "attention.attention.relative_position_bias.relative_position_bias_table",
    ),
    _rule(_BEIT_BLOCK_UP + "attn.q_bias", _BEIT_BLOCK_HF + "attention.attention.query.bias"),
    _rule(_BEIT_BLOCK_UP + "attn.v_bias", _BEIT_BLOCK_HF + "attention.attention.value.bias"),
    _qkv(_BEIT_BLOCK_UP + "attn.qkv.weight", _BEIT_BLOCK_HF + "attention.attention.", "weight"),
    _rule("pretrained.act_postprocess{i+1}.0.project.0.{p}", "neck.reassemble_stage.readout_projects.{i}.0.{p}"),
    _rule("pretrained.act_postprocess{i+1}.3.{p}", "neck.reassemble_stage.layers.{i}.projection.{p}"),
    _rule("pretrained.act_postprocess{i+1}.4.{p}", "neck.reassemble_stage.layers.{i}.resize.{p}"),
    *_dpt_fusion_rules(""),
    *_MIDAS_HEAD,
]

_SWIN_BLOCK_UP = "pretrained.model.layers.{i}.blocks.{j}."
_SWIN_BLOCK_HF = "backbone.encoder.layers.{i}.blocks.{j}."
_MIDAS_SWIN2_RULES = [
    _rule("pretrained.model.patch_embed.proj.{p}", "backbone.embeddings.patch_embeddings.projection.{p}"),
    _rule("pretrained.model.patch_embed.norm.{p}", "backbone.embeddings.norm.{p}"),
    _rule(_SWIN_BLOCK_UP + "attn.logit_scale", _SWIN_BLOCK_HF + "attention.self.logit_scale"),
    _rule(_SWIN_BLOCK_UP + "attn.cpb_mlp.0.{p}", _SWIN_BLOCK_HF + "attention.self.continuous_position_bias_mlp.0.{p}"),
    _rule(
        _SWIN_BLOCK_UP + "attn.cpb_mlp.2.weight",
        _SWIN_BLOCK_HF + "attention.self.continuous_position_bias_mlp.2.weight",
    ),
    _rule(_SWIN_BLOCK_UP + "attn.q_bias", _SWIN_BLOCK_HF + "attention.self.query.bias"),
    _rule(_SWIN_BLOCK_UP + "attn.v_bias", _SWIN_BLOCK_HF + "attention.self.value.bias"),
    _qkv(_SWIN_BLOCK_UP + "attn.qkv.weight", _SWIN_BLOCK_HF + "attention.self.", "weight"),
    _rule(_SWIN_BLOCK_UP + "attn.proj.{p}", _SWIN_BLOCK_HF + "attention.output.dense.{p}"),
    _rule(_SWIN_BLOCK_UP + "norm1.{p}", _SWIN_BLOCK_HF + "layernorm_before.{p}"),
    _rule(_SWIN_BLOCK_UP + "norm2.{p}", _SWIN_BLOCK_HF + "layernorm_after.{p}"),
    _rule(_SWIN_BLOCK_UP + "mlp.fc1.{p}", _SWIN_BLOCK_HF + "intermediate.dense.{p}"),
    _rule(_SWIN_BLOCK_UP + "mlp.fc2.{p}", _SWIN_BLOCK_HF + "output.dense.{p}"),
    _rule(
        "pretrained.model.layers.{i}.downsample.reduction.weight",
        "backbone.encoder.layers.{i}.downsample.reduction.weight",
    ),
    _rule("pretrained.model.layers.{i}.downsample.norm.{p}", "backbone.encoder.layers.{i}.downsample.norm.{p}"),
    *_dpt_fusion_rules(""),
    *_MIDAS_HEAD,
]

_DINO_BLOCK_UP = "pretrained.blocks.{i}."
_DINO_BLOCK_HF = "backbone.encoder.layer.{i}."
_DEPTH_ANYTHING_V2_RULES = [
    _rule("pretrained.cls_token", "backbone.embeddings.cls_token"),
    _rule("pretrained.mask_token", "backbone.embeddings.mask_token"),
    _rule("pretrained.pos_embed", "backbone.embeddings.position_embeddings"),
    _rule("pretrained.patch_embed.proj.{p}", "backbone.embeddings.patch_embeddings.projection.{p}"),
    _rule(_DINO_BLOCK_UP + "ls1.gamma", _DINO_BLOCK_HF + "layer_scale1.lambda1"),
    _rule(_DINO_BLOCK_UP + "ls2.gamma", _DINO_BLOCK_HF + "layer_scale2.lambda1"),
    _rule(_DINO_BLOCK_UP + "norm1.{p}", _DINO_BLOCK_HF + "norm1.{p}"),
    _rule(_DINO_BLOCK_UP + "norm2.{p}", _DINO_BLOCK_HF + "norm2.{p}"),
    _rule(_DINO_BLOCK_UP + "mlp.fc1.{p}", _DINO_BLOCK_HF + "mlp.fc1.{p}"),
    _rule(_DINO_BLOCK_UP + "mlp.fc2.{p}", _DINO_BLOCK_HF + "mlp.fc2.{p}"),
    _rule(_DINO_BLOCK_UP + "attn.proj.{p}", _DINO_BLOCK_HF + "attention.output.dense.{p}"),
    _qkv(_DINO_BLOCK_UP + "attn.qkv.weight", _DINO_BLOCK_HF + "attention.attention.", "weight"),
    _qkv(_DINO_BLOCK_UP + "attn.qkv.bias", _DINO_BLOCK_HF + "attention.attention.", "bias"),
    _rule("pretrained.norm.{p}", "backbone.layernorm.{p}"),
    _rule("depth_head.projects.{i}.{p}", "neck.reassemble_stage.layers.{i}.projection.{p}"),
    _rule("depth_head.resize_layers.{i}.{p}", "neck.reassemble_stage.layers.{i}.resize.{p}"),
    *_dpt_fusion_rules("depth_head."),
    _rule("depth_head.scratch.output_conv1.{p}", "head.conv1.{p}"),
    _rule("depth_head.scratch.output_conv2.0.{p}", "head.conv2.{p}"),
    _rule("depth_head.scratch.output_conv2.2.{p}", "head.conv3.{p}"),
]

_RULES: dict[str, list[_Rule]] = {
    "midas_beit": _MIDAS_BEIT_RULES,
    "midas_swin2": _MIDAS_SWIN2_RULES,
    "depth_anything_v2": _DEPTH_ANYTHING_V2_RULES,
}

# upstream entries the Hugging Face models do not hold (recomputed buffers, unused classifier parts)
_DROPPED: dict[str, re.Pattern] = {
    # BEiT's zero key bias (a buffer in some timm versions) cannot change attention: softmax ignores it
    "midas_beit": re.compile(
        r"(\.(relative_position_index|attn\.k_bias)$)|(^pretrained\.model\.(head|fc_norm|norm)\.)"
    ),
    "midas_swin2": re.compile(
        r"(\.(relative_position_index|relative_coords_table|attn_mask)$)|(^pretrained\.model\.(head|norm)\.)"
    ),
    "depth_anything_v2": re.compile(r"$^"),  # nothing is dropped
}

UPSTREAM_KINDS = tuple(_RULES)


def _check_kind(kind: str) -> list[_Rule]:
    if kind not in _RULES:
        raise ValueError(f"unknown upstream checkpoint kind {kind!r}; known: {UPSTREAM_KINDS}")
    return _RULES[kind]


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, Tensor]:
    """The flat ``{name: tensor}`` dict inside a loaded checkpoint.

    Accepts a plain state dict, or a training checkpoint holding one under ``"model"`` / ``"state_dict"``
    (MiDaS saves ``{"model": ..., "optimizer": ...}`` in some releases); strips a DataParallel ``module.`` prefix.
    """
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointFormatError(f"{source}: expected a state dict of named tensors, got {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def is_hf_state_dict(sd: Mapping[str, Tensor]) -> bool:
    """Whether the keys are already Hugging Face DPT / Depth Anything names (``backbone.*``, ``neck.*``, ``head.*``)."""
    return bool(sd) and all(k.split(".", 1)[0] in ("backbone", "neck", "head", "dpt") for k in sd)


def detect_upstream_kind(sd: Mapping[str, Tensor], source: str = "checkpoint") -> str:
    """``midas_beit``, ``midas_swin2`` or ``depth_anything_v2``, from the key names of an upstream state dict."""
    if "pretrained.blocks.0.attn.qkv.weight" in sd and any(k.startswith("depth_head.") for k in sd):
        return "depth_anything_v2"
    if "pretrained.model.blocks.0.attn.qkv.weight" in sd and "pretrained.model.blocks.0.attn.q_bias" in sd:
        return "midas_beit"
    if "pretrained.model.layers.0.blocks.0.attn.qkv.weight" in sd:
        return "midas_swin2"
    sample = ", ".join(sorted(sd)[:5])
    raise CheckpointFormatError(
        f"{source}: not a supported upstream checkpoint (MiDaS v3.1 BEiT/SwinV2 or Depth Anything V2); "
        f"first keys: {sample}"
    )


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := regex.match(k))})


def upstream_architecture(sd: Mapping[str, Tensor], kind: str) -> dict[str, object]:
    """The backbone size an upstream state dict holds, for clear variant-mismatch errors.

    Returns ``{"hidden_size", "num_layers"}`` for ViT-type backbones (BEiT, DINOv2) and
    ``{"embed_dim", "depths"}`` for SwinV2.
    """
    _check_kind(kind)
    try:
        if kind == "midas_swin2":
            n_stages = _count(sd, r"pretrained\.model\.layers\.(\d+)\.blocks\.0\.norm1\.weight")
            depths = [
                _count(sd, rf"pretrained\.model\.layers\.{s}\.blocks\.(\d+)\.norm1\.weight") for s in range(n_stages)
            ]
            return {"embed_dim": int(sd["pretrained.model.patch_embed.proj.weight"].shape[0]), "depths": depths}
        prefix = "pretrained\\.model\\." if kind == "midas_beit" else "pretrained\\."
        cls_key = "pretrained.model.cls_token" if kind == "midas_beit" else "pretrained.cls_token"
        return {
            "hidden_size": int(sd[cls_key].shape[-1]),
            "num_layers": _count(sd, prefix + r"blocks\.(\d+)\.norm1\.weight"),
        }
    except KeyError as err:
        raise CheckpointFormatError(f"{kind} checkpoint lacks the entry {err}") from None


def upstream_to_hf(sd: Mapping[str, Tensor], kind: str, source: str = "checkpoint") -> dict[str, Tensor]:
    """Rename an upstream state dict (``kind`` from :func:`detect_upstream_kind`) to Hugging Face Hub names.

    Raises :class:`CheckpointFormatError` listing any key that neither maps nor is a known droppable entry.
    """
    rules = _check_kind(kind)
    dropped = _DROPPED[kind]
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key in sd:
        for rule in rules:
            mapped = rule.to_hf(key, sd)
            if mapped is not None:
                clash = set(mapped) & set(out)
                if clash:
                    raise CheckpointFormatError(f"{source}: two upstream keys map onto {sorted(clash)[0]}")
                out.update(mapped)
                break
        else:
            if not dropped.search(key):
                unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 8 else "")
        raise CheckpointFormatError(f"{source}: keys not recognised as a {kind} checkpoint: {shown}")
    return out


def hf_to_upstream(sd: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
    """Inverse of :func:`upstream_to_hf` (Hub names -> upstream names; fused qkv re-concatenated).

    Used to write upstream-named files from a Hugging Face model (tests, round trips). Entries the upstream files also
    carry but the Hugging Face models recompute (buffers, classifier heads) are not produced.
    """
    rules = _check_kind(kind)
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[int, Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in sd.items():
        for rule in rules:
            hit = next(((n, v) for n, side in enumerate(rule.hf) if (v := side.match(key)) is not None), None)
            if hit is None:
                continue
            n, values = hit
            up_key = rule.upstream.fill(values)
            if len(rule.hf) == 1:
                out[up_key] = tensor
            else:
                parts = pending.setdefault(up_key, {})
                parts[n] = tensor
                if len(parts) == len(rule.hf):
                    out[up_key] = torch.cat([parts[i] for i in range(len(rule.hf))], dim=0)
                    del pending[up_key]
            break
        else:
            unknown.append(key)
    if unknown or pending:
        missing = unknown[:5] + [f"{k} (incomplete q/k/v)" for k in list(pending)[:5]]
        raise CheckpointFormatError(f"Hugging Face keys without an upstream name for {kind}: {', '.join(missing)}")
    return out
