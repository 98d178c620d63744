"""The whole composed config checked before any work, in one place: :func:`validate_config`.

Size (over the ~450-line guide): the one place every config check lives (types from the stages' signatures,
cross-key rules, devices, extras, weights), as the fail-fast design asks; splitting it would scatter that list.

Called by the command line (``modules/cli.py``, right after Hydra composed the config) and by the Python API
(``modules/api.py``). Every problem is collected and reported in one :class:`ConfigError` (a UserError: the runner
prints it and exits 2), one line per problem naming the key, the value and what is allowed:

* types and rules of every key, from each stage's typed options: a ``_target_`` stage's constructor signature (its
  annotations; nested option mappings such as ``scale.floor`` against the function that takes them), the option
  dataclasses of the groups without a constructor (:mod:`modules.options`: dataset, paths, runtime, batch, video,
  each mode) and export's (:mod:`modules.export.mesh_files`); then the cheap stages are built once on the
  side (projection, preprocess, alignment, blending, sky, refinement, scale) so their own range checks report too;
* options that exclude each other (``scale.camera_height`` and ``scale.factor``), a method without its input;
* the device (``runtime.device``: a name torch knows and a device this machine has);
* the optional packages the run needs (:func:`missing_extras`);
* the weights of every network the predictor will load, all at once: what is missing, where it was looked for,
  where to put it and the command that fetches it (unless a download can start now: the Hub is reachable and
  downloads are allowed).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError
from .extras import EXTRAS, MissingExtraError, available, missing_message
from .options import MODE_OPTIONS, GROUP_OPTIONS, Rule, runtime_options

__all__ = ["ConfigError", "ExtrasConfigError", "validate_config", "config_problems", "missing_extras", "DEVICE_NAMES"]

log = logging.getLogger(__name__)

#: what runtime.device (and a predictor's device) may name
DEVICE_NAMES = "auto, cpu, cuda, cuda:<index>, mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_MISSING = object()


class ConfigError(UserError, ValueError):
    """The composed config has problems; the message lists every one (key, value, what is allowed)."""


class ExtrasConfigError(ConfigError, MissingExtraError):
    """A ConfigError among whose problems is a missing optional package (also a MissingExtraError)."""


# ------------------------------------------------------------------------------------------------ types


def _type_words(hint: Any) -> list[str]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [w for a in typing.get_args(hint) for w in _type_words(a)]
    if hint is type(None):
        return ["null"]
    if origin is typing.Literal:
        return [repr(a) for a in typing.get_args(hint)]
    base = origin or hint
    return [{bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base) or
            ("a list" if isinstance(base, type) and issubclass(base, (list, tuple, Sequence)) and base is not str
             else "a mapping" if isinstance(base, type) and issubclass(base, (dict, Mapping)) else "a value")]


def _matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value (None, bool, int, float, str, list, dict) can be ``hint``."""
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, (str, typing.TypeVar)):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    base = origin or hint
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if not isinstance(base, type):
        return True
    if issubclass(base, (list, tuple)) or base in (Sequence, typing.Sequence) or (
            issubclass(base, Sequence) and base is not str):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return len(args) != 1 or all(_matches(v, args[0]) for v in value)
    if issubclass(base, (dict, Mapping)):
        return isinstance(value, dict)
    if dataclasses.is_dataclass(base):
        return isinstance(value, dict)
    return True  # a class (a predictor, a config object): given as a mapping or built by the caller


def _hints(func: Callable) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(parameters, type hints, takes **kwargs) of a callable; a class's **kwargs forwarded up its MRO are
    followed (``MidasPredictor(variant, **kwargs)`` -> ``HFDepthPredictor.__init__``)."""
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    chain = [c.__init__ for c in func.__mro__ if "__init__" in vars(c) and c is not object] if isinstance(
        func, type) and not dataclasses.is_dataclass(func) else [func]
    open_kwargs = True
    for f in chain:
        try:
            sig = inspect.signature(f)
        except (TypeError, ValueError):
            return params, hints, True
        try:
            hints.update({k: v for k, v in typing.get_type_hints(f).items() if k not in hints})
        except Exception:  # an annotation that cannot be evaluated: keep the others unchecked
            pass
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params.setdefault(name, p)
        open_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if not open_kwargs:
            break
    return params, hints, open_kwargs


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else "null" if value is None else str(value).replace("True", "true") \
        .replace("False", "false")


class _Problems(list):
    def add(self, key: str, value: Any, what: str) -> None:
        line = f"{key} = {_show(value)}: {what}" if value is not _MISSING else f"{key}: {what}"
        if line not in self:
            self.append(line)


def _value(node: Any, key: str) -> Any:
    """A node's value with interpolations resolved (plain python); _MISSING when it cannot be resolved here."""
    try:
        v = node[key]
    except (OmegaConfBaseException, KeyError, AttributeError, TypeError, ValueError):
        return _MISSING
    if isinstance(v, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(v, resolve=True)
        except OmegaConfBaseException:
            return _MISSING
    return v


def _check_value(problems: _Problems, key: str, value: Any, hint: Any, rule: Rule | None) -> bool:
    if value is _MISSING:
        return True
    if hint is not None and not _matches(value, hint):
        words = " or ".join(dict.fromkeys(_type_words(hint)))
        extra = f"; allowed: {rule.describe()}" if rule else ""
        problems.add(key, value, f"must be {words}{extra}")
        return False
    if rule is not None:
        what = rule.problem(value)
        if what:
            problems.add(key, value, what)
            return False
    return True


def _check_dataclass(problems: _Problems, where: str, node: Any, cls: type) -> None:
    """Keys of ``node`` against the options dataclass ``cls`` (types, rules, nested dataclasses, unknown keys)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in list(node.keys()):
        path = f"{where}.{key}"
        if key not in fields:
            problems.add(path, _MISSING, f"unknown key; known: {', '.join(sorted(fields))}")
            continue
        hint = hints.get(key)
        value = _value(node, key)
        if dataclasses.is_dataclass(hint) and isinstance(node[key], (DictConfig, dict)):
            _check_dataclass(problems, path, node[key], hint)
            continue
        _check_value(problems, path, value, hint, fields[key].metadata.get("rule"))


# ------------------------------------------------------------------------------------------------ _target_ stages


def _target_rules() -> list[tuple[type | Callable, str, Callable[[Any], Rule | None]]]:
    """Rules with the allowed values of keys whose constructor checks them without saying what is allowed (or
    loads weights first): (class or function, key, node -> Rule)."""
    from .fusion.scale import SCALE_METHODS, Scale
    from .geo_predictors.hf_predictor import PRECISIONS, HFDepthPredictor
    from .geometry.projections import IcosahedronProjection, TangentProjection

    return [
        (TangentProjection, "face_size", lambda _: Rule(ge=8, note="pixels per face side, e.g. 512")),
        (TangentProjection, "rotations", lambda _: Rule(ge=1)),
        (TangentProjection, "outdoor_rotations", lambda _: Rule(ge=1, note="1 = never more than `rotations`")),
        (TangentProjection, "outdoor_sky_fraction", lambda _: Rule(ge=0, le=1, note="share of the panorama's pixels")),
        (TangentProjection, "padding_factor", lambda _: Rule(gt=0, note="1.0 = faces just touch")),
        (IcosahedronProjection, "level", lambda _: Rule(choices=(0, 1, 2))),
        (HFDepthPredictor, "precision", lambda _: Rule(choices=tuple(PRECISIONS))),
        (HFDepthPredictor, "batch_size", lambda _: Rule(ge=1)),
        (HFDepthPredictor, "input_size", lambda _: Rule(ge=8)),
        (HFDepthPredictor, "metric_view_fov_deg", lambda _: Rule(gt=0, lt=170)),
        (HFDepthPredictor, "metric_view_size", lambda _: Rule(ge=8)),
        (Scale, "method", lambda _: Rule(choices=SCALE_METHODS)),
        (Scale, "camera_height", lambda _: Rule(gt=0, note="metres from the camera down to the floor")),
        (Scale, "factor", lambda _: Rule(gt=0)),
    ]


def _sub_options() -> dict[tuple[type, str], Callable]:
    """Option mappings a stage passes on to a function: their keys are that function's keyword arguments."""
    from .fusion.metric_scale import network_scale
    from .fusion.scale import Scale, fit_floor_plane

    return {(Scale, "floor"): fit_floor_plane, (Scale, "network"): network_scale}


_FLOOR_RULES = {
    "min_depression_deg": Rule(ge=0, lt=90), "max_tilt_deg": Rule(ge=0, lt=90), "inlier_tolerance": Rule(gt=0),
    "num_hypotheses": Rule(ge=1), "max_points": Rule(ge=3), "min_inlier_fraction": Rule(ge=0, le=1),
    "support_band": Rule(ge=1), "saturation": Rule(gt=0, le=1), "min_valid_fraction": Rule(ge=0, le=1),
}


def _export_rules() -> dict[str, Rule]:
    from .export.mesh_files import MESH_FORMATS

    return {
        "export.pointcloud.stride": Rule(ge=1), "export.dense.mesh.stride": Rule(ge=1),
        "export.dense.mesh.max_edge_stretch": Rule(gt=1), "export.dense.mesh.decimate_faces": Rule(ge=4),
        "export.dense.files.formats": Rule(choices=MESH_FORMATS), "export.dense.files.verify": Rule(choices=MESH_FORMATS),
        "export.dense.splats.formats": Rule(choices=("ply", "splat")), "export.dense.splats.sh_degree": Rule(ge=0, le=3),
        "export.dense.splats.stride": Rule(ge=1), "export.dense.point_cloud.stride": Rule(ge=1),
        "export.dense.sky_dome": Rule(gt=1),
    }


def _preprocess_problems(problems: _Problems, cfg: DictConfig) -> set[str]:
    """preprocess.config.<step>.<key> against the step's constructor (modules/geo_predictors/enhance.py)."""
    from .geo_predictors.enhance import STEP_TYPES

    config = OmegaConf.select(cfg, "preprocess.config", default=None)
    bad: set[str] = set()
    if not isinstance(config, DictConfig):
        return bad
    for step, cls in STEP_TYPES.items():
        node = config.get(step)
        if not isinstance(node, DictConfig):
            continue
        params, hints, _ = _hints(cls)
        for key in node.keys():
            path = f"preprocess.config.{step}.{key}"
            if key == "enabled":
                ok = _check_value(problems, path, _value(node, key), bool, None)
            elif key not in params:
                problems.add(path, _MISSING, f"unknown key; known: enabled, {', '.join(sorted(params))}")
                ok = False
            else:
                ok = _check_value(problems, path, _value(node, key), hints.get(key), None)
            if not ok:
                bad.add("preprocess")
    return bad


def _locate(name: str) -> Any:
    from hydra.utils import get_object

    return get_object(name)


def _check_target(problems: _Problems, where: str, node: DictConfig) -> bool:
    """Types of a ``_target_`` node's keys against its constructor's annotations; False when one is wrong."""
    name = _value(node, "_target_")
    try:
        target = _locate(str(name))
    except Exception as exc:
        cause = exc
        while cause is not None and not isinstance(cause, ImportError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ImportError) and (cause.name or "").split(".")[0] in EXTRAS:
            return True  # an optional package: missing_extras names it and its extra
        problems.add(f"{where}._target_", name, f"cannot be imported ({type(exc).__name__}: {exc})")
        return False
    params, hints, open_kwargs = _hints(target)
    rules = [(cls, key, make) for cls, key, make in _target_rules()
             if isinstance(target, type) and isinstance(cls, type) and issubclass(target, cls)]
    subs = {key: f for (cls, key), f in _sub_options().items() if isinstance(target, type) and issubclass(target, cls)}
    ok = True
    variants = getattr(target, "variants", None)
    for key in node.keys():
        if str(key).startswith("_"):
            continue
        path = f"{where}.{key}"
        child = node[key]
        if key not in params:
            if not open_kwargs:
                problems.add(path, _MISSING, f"unknown key of {name}; known: {', '.join(sorted(params))}")
                ok = False
            continue
        if isinstance(child, DictConfig) and "_target_" in child:
            continue  # a nested stage: checked on its own
        if OmegaConf.is_interpolation(node, key):
            continue  # checked where its value is set
        value = _value(node, key)
        rule = next((make(node) for _, k, make in rules if k == key), None)
        if key == "variant" and isinstance(variants, Mapping):
            rule = Rule(choices=tuple(sorted(variants)))
        ok &= _check_value(problems, path, value, hints.get(key), rule)
        option_cls = _option_class(hints.get(key))
        if option_cls is not None and isinstance(value, dict) and key not in subs:
            subs[key] = option_cls
        if key in subs and isinstance(value, dict):
            sub_params, sub_hints, _ = _hints(subs[key])
            for k, v in value.items():
                if k not in sub_params or sub_params[k].kind == inspect.Parameter.POSITIONAL_ONLY:
                    problems.add(f"{path}.{k}", _MISSING, f"unknown key; known: "
                                 f"{', '.join(sorted(p for p, q in sub_params.items() if q.default is not q.empty))}")
                    ok = False
                else:
                    ok &= _check_value(problems, f"{path}.{k}", v, sub_hints.get(k),
                                       _FLOOR_RULES.get(k) if key in ("floor", "network") else None)
    return ok


def _option_class(hint: Any) -> type | None:
    """The options class of a parameter typed ``SomeConfig | dict | None`` (its keys are that class's arguments)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for a in args:
        if isinstance(a, type) and a.__module__.startswith("modules.") and (
                dataclasses.is_dataclass(a) or "__init__" in vars(a)):
            return a
    return None


def _target_nodes(node: Any, where: str):
    """(dotted key, node) of every mapping with a ``_target_`` below ``node``."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield where, node
        for key in node.keys():
            try:
                child = node._get_node(key)
            except OmegaConfBaseException:
                continue
            if isinstance(child, DictConfig):
                yield from _target_nodes(child, f"{where}.{key}" if where else str(key))


#: stages cheap enough to build once during the check, so that their constructors' own range checks report
_BUILT_FOR_CHECK = ("projection", "preprocess", "alignment", "fusion.blender", "fusion.sky", "refinement", "scale")


def _build_problems(problems: _Problems, cfg: DictConfig, bad: set[str]) -> None:
    from hydra.utils import instantiate

    bad_keys = {line.split(" = ")[0].split(":")[0] for line in problems}

    def takes_a_bad_value(node: DictConfig) -> bool:
        for k in node.keys():
            if OmegaConf.is_interpolation(node, k):
                raw = str(node._get_node(k)._value())
                if raw.startswith("${") and raw[2:-1] in bad_keys:
                    return True
            elif isinstance(node._get_node(k), DictConfig) and takes_a_bad_value(node[k]):
                return True
        return False

    for key in _BUILT_FOR_CHECK:
        node = OmegaConf.select(cfg, key, default=None)
        if not isinstance(node, DictConfig) or "_target_" not in node or any(
                b == key or b.startswith(key + ".") for b in bad) or takes_a_bad_value(node):
            continue
        try:
            instantiate(node, _convert_="all")
        except Exception as exc:
            cause = exc
            while cause.__cause__ is not None and type(cause).__name__ == "InstantiationException":
                cause = cause.__cause__
            problems.add(key, _MISSING, str(cause).splitlines()[0] if str(cause) else type(cause).__name__)


# ------------------------------------------------------------------------------------------------ cross-key checks


def _cross_problems(problems: _Problems, cfg: DictConfig) -> bool:
    """Options that exclude or need each other; True when one was found."""
    before = len(problems)
    scale = cfg.get("scale")
    if isinstance(scale, DictConfig):
        height, factor, method = _value(scale, "camera_height"), _value(scale, "factor"), _value(scale, "method")
        if height is not None and factor is not None and height is not _MISSING and factor is not _MISSING:
            problems.add("scale.camera_height / scale.factor", _MISSING,
                         f"both given ({height} and {factor}); give one of them, not both")
        if method == "camera_height" and height is None:
            problems.add("scale.method", method, "needs scale.camera_height (metres from the camera to the floor)")
        if method == "factor" and factor is None:
            problems.add("scale.method", method, "needs scale.factor")
        if method == "network" and not _has_metric_predictor(cfg):
            problems.add("scale.method", method, "needs a metric predictor: predictor=depth_pro, predictor=joint_metric, "
                         "predictor=depth_anything_v2 with a metric_* variant, or predictor=synthetic with "
                         "predictor.metric={...}")
    return len(problems) > before


def _has_metric_predictor(cfg: DictConfig) -> bool:
    """Whether the predictor config holds a metric network (or the synthetic predictor's metric mode)."""
    for where, node in _target_nodes(cfg.get("predictor"), "predictor"):
        try:
            cls = _locate(str(_value(node, "_target_")))
        except Exception:
            return True  # reported elsewhere; do not guess
        variants = getattr(cls, "variants", None)
        variant = _value(node, "variant")
        if isinstance(variants, Mapping) and variant in variants and variants[variant].is_metric:
            return True
        if "metric" in node and node.get("metric") is not None and not isinstance(node.get("metric"), DictConfig):
            return True  # a metric mode given as a value
        if isinstance(node.get("metric"), DictConfig) and len(node.metric):
            if "_target_" not in node.metric:
                return True  # the synthetic predictor's metric options
    return False


def _local_problems(problems: _Problems, cfg: DictConfig) -> None:
    """A machine-local override file (configs/local/default.yaml) without ``# @package _global_`` as its first line
    lands under ``local.*``, where nothing reads it: refuse instead of ignoring it silently."""
    local = cfg.get("local")
    if isinstance(local, DictConfig) and len(local):
        keys = ", ".join(f"local.{k}" for k in list(local.keys())[:5])
        problems.add("configs/local/default.yaml", _MISSING,
                     f"ignored as written: its keys landed under {keys} because the file does not start with the "
                     "line '# @package _global_'; add that line at the top (README, Configuration)")


def _device_problem(problems: _Problems, key: str, value: Any) -> None:
    if value is _MISSING or not isinstance(value, str):
        return
    if not _DEVICE.match(value):
        problems.add(key, value, f"not a device; allowed: {DEVICE_NAMES}")
        return
    from .device import resolve_device

    try:
        device = resolve_device(value)
    except RuntimeError as exc:
        problems.add(key, value, f"{exc}; use runtime.device=auto or cpu")
        return
    import torch

    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        problems.add(key, value, f"this machine has {torch.cuda.device_count()} CUDA device(s); allowed: cuda:0 .. "
                                 f"cuda:{torch.cuda.device_count() - 1}, cuda, auto, cpu")


def _device_problems(problems: _Problems, cfg: DictConfig) -> None:
    runtime = cfg.get("runtime")
    if isinstance(runtime, DictConfig) and "device" in runtime:
        _device_problem(problems, "runtime.device", _value(runtime, "device"))
    main = _value(runtime, "device") if isinstance(runtime, DictConfig) else None
    for where, node in _target_nodes(cfg.get("predictor"), "predictor"):
        if "device" in node and _value(node, "device") != main:
            _device_problem(problems, f"{where}.device", _value(node, "device"))


# ------------------------------------------------------------------------------------------------ extras


def _assimp_found(executable) -> bool:
    from .export.mesh_io import AssimpError, find_assimp

    try:
        find_assimp(executable)
        return True
    except AssimpError:
        return False


def _is_ray(cfg: DictConfig) -> bool:
    """Whether the run's executor is Ray's (``runtime.executor._target_``)."""
    runtime = cfg.get("runtime")
    executor = runtime.get("executor") if isinstance(runtime, DictConfig) else None
    return executor is not None and str(executor.get("_target_", "")).startswith("modules.runtime.ray")


def missing_extras(cfg: DictConfig) -> list[str]:
    """One line per optional package the composed config ``cfg`` needs and cannot import (naming its extra)."""
    needs: list[tuple[str, str]] = []
    mode = cfg.mode.name
    dense = cfg.export.get("dense") if "export" in cfg else None
    if mode in ("render_dense", "single_view") and dense is not None:
        formats = set(dense.files.formats or [])
        if "glb" in formats:
            needs.append(("pygltflib", f"mode={mode} with export.dense.files.formats containing glb"))
        if "obj" in formats and "obj" in set(dense.files.get("verify") or []) and not _assimp_found(
                dense.files.get("assimp_executable")):
            needs.append(("cmeel_assimp", f"mode={mode} with export.dense.files.verify containing obj"))
        if dense.mesh.get("decimate_faces") is not None or dense.mesh.get("poisson"):
            needs.append(("open3d", f"mode={mode} with export.dense.mesh.decimate_faces or poisson"))
        if dense.point_cloud.get("enabled"):
            needs.append(("open3d", f"mode={mode} with export.dense.point_cloud.enabled"))
        if dense.previews.get("enabled"):
            needs.append(("pyvista", f"mode={mode} with export.dense.previews.enabled"))
    if _is_ray(cfg):
        needs.append(("ray", "runtime=ray"))
    if mode == "eval" and cfg.mode.get("gt_format") == "exr":
        needs.append(("OpenEXR", "mode=eval with mode.gt_format=exr"))
    seen, out = set(), []
    for module, feature in needs:
        if module in seen or (available(module) if module != "cmeel_assimp" else False):
            continue
        seen.add(module)
        out.append(missing_message(feature, module))
    return out


# ------------------------------------------------------------------------------------------------ weights


def _networks(cfg: DictConfig) -> list[tuple[str, DictConfig, type]]:
    """(key, node, class) of every network predictor the run will load (a ``joint_metric`` member under
    ``scale.method=auto`` is left out: it is never downloaded and runs only when its weights are present)."""
    from .geo_predictors.hf_predictor import HFDepthPredictor

    method = _value(cfg.scale, "method") if "scale" in cfg else "auto"
    out = []
    for where, node in _target_nodes(cfg.get("predictor"), "predictor"):
        if where.endswith(".metric") and method == "auto":
            continue
        try:
            cls = _locate(str(_value(node, "_target_")))
        except Exception:
            continue
        if isinstance(cls, type) and issubclass(cls, HFDepthPredictor):
            out.append((where, node, cls))
    return out


def weights_problems(cfg: DictConfig) -> list[str]:
    """One block per network whose weights are not on this machine and will not be downloaded now (each: what,
    where it was looked for, why no download, the fetch command / where to put the file), for all at once."""
    from .geo_predictors.weights import WeightsSpec, download_note, find_local_weights, missing_weights_lines

    blocks: list[str] = []
    reach: dict[bool, str | None] = {}
    for where, node, cls in _networks(cfg):
        variant = _value(node, "variant")
        if variant is _MISSING or variant not in cls.variants:
            continue  # reported as a bad variant
        weights = _value(node, "weights")
        if weights == "random" or _value(node, "allow_random_weights") is True:
            continue
        v = cls.variants[variant]
        spec = WeightsSpec(predictor=cls.predictor_name, variant=variant, family=cls.family, hf_id=v.hf_id,
                           upstream_file=v.upstream_file, upstream_url=v.upstream_url)
        checkpoint_dir = _value(node, "checkpoint_dir")
        try:
            found, looked, repo_id = find_local_weights(spec, weights, checkpoint_dir)
        except UserError as exc:
            blocks.append(f"{where}.weights: {exc}")
            continue
        if found is not None:
            continue
        allow = bool(_value(node, "allow_download"))
        if repo_id is None:
            note = ""
        else:
            if allow not in reach:
                reach[allow] = download_note(allow)
            note = reach[allow]
            if note is None:
                log.info("%s: %s weights are not on this machine; they will be downloaded", where, spec.family)
                continue
        lines = missing_weights_lines(spec, checkpoint_dir, looked, note)
        blocks.append(f"{where} ({cls.predictor_name}): " + "\n    ".join(lines))
    return blocks


# ------------------------------------------------------------------------------------------------ the check


def config_problems(cfg: DictConfig, weights: bool = True) -> list[str]:
    """Every problem of the composed config ``cfg`` (empty: it can run), one line (or block) each."""
    from .export.axes import AXES
    from .export.maps import MAP_NAMES
    from .export.dense import MeshOptions
    from .export.mesh_files import FileOptions, PointCloudOptions, PreviewOptions, SplatOptions

    problems = _Problems()
    mode = _value(cfg.mode, "name") if "mode" in cfg else _MISSING
    if mode not in MODE_OPTIONS:
        problems.add("mode", mode, f"unknown mode; allowed: {', '.join(sorted(MODE_OPTIONS))}")
    else:
        _check_dataclass(problems, "mode", cfg.mode, MODE_OPTIONS[mode])
    for group, cls in GROUP_OPTIONS.items():
        if isinstance(cfg.get(group), DictConfig):
            _check_dataclass(problems, group, cfg[group], cls)
    if isinstance(cfg.get("runtime"), DictConfig):
        _check_dataclass(problems, "runtime", cfg.runtime, runtime_options(_is_ray(cfg)))
    export = cfg.get("export")
    if isinstance(export, DictConfig):
        _check_value(problems, "export.axes", _value(export, "axes"), str, Rule(choices=AXES))
        _check_value(problems, "export.png_compress_level", _value(export, "png_compress_level"), int, Rule(ge=0, le=9))
        _check_value(problems, "export.maps", _value(export, "maps"), list[str], Rule(choices=MAP_NAMES))
        dense = export.get("dense")
        if isinstance(dense, DictConfig):
            for key, cls in (("mesh", MeshOptions), ("files", FileOptions), ("splats", SplatOptions),
                             ("point_cloud", PointCloudOptions), ("previews", PreviewOptions)):
                if isinstance(dense.get(key), DictConfig):
                    _check_dataclass(problems, f"export.dense.{key}", dense[key], cls)
            for path, rule in _export_rules().items():
                node = OmegaConf.select(cfg, path.rsplit(".", 1)[0], default=None)
                if isinstance(node, DictConfig) and path.rsplit(".", 1)[1] in node:
                    _check_value(problems, path, _value(node, path.rsplit(".", 1)[1]), None, rule)
    bad: set[str] = set()
    for where, node in _target_nodes(cfg, ""):
        if where.startswith("hydra"):
            continue
        if not _check_target(problems, where, node):
            bad.add(where)
    _local_problems(problems, cfg)
    bad |= _preprocess_problems(problems, cfg)
    if _cross_problems(problems, cfg):
        bad.add("scale")
    _device_problems(problems, cfg)
    _build_problems(problems, cfg, bad)
    problems.extend(missing_extras(cfg))
    if weights and not any(p.split(" ", 1)[0].startswith("predictor") for p in problems):
        problems.extend(weights_problems(cfg))
    return list(problems)


def validate_config(cfg: DictConfig, weights: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg`` (nothing has run yet); when a missing optional
    package is among them, an :class:`ExtrasConfigError` (also a :class:`~modules.extras.MissingExtraError`)."""
    problems = config_problems(cfg, weights=weights)
    if problems:
        n = len(problems)
        extras = set(missing_extras(cfg))
        head = f"the configuration has {n} problem{'s' if n > 1 else ''} (nothing was run):"
        raise (ExtrasConfigError if extras & set(problems) else ConfigError)(
            f"{head} {problems[0]}" if n == 1 else head + "\n  " + "\n  ".join(problems))
