"""One default per key: where a stage's constructor has a default for a key its config group sets, they agree
(the constructor is what a library caller gets; the yaml is what a run gets; they must not drift apart)."""

import importlib
import inspect

import pytest
import yaml

from modules.config import PROJECT_ROOT

CONFIGS = PROJECT_ROOT / "configs"


def target_nodes(node, where):
    """(where, mapping) of every mapping with a ``_target_`` in a yaml document."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node
        for key, value in node.items():
            yield from target_nodes(value, f"{where}.{key}")


def cases():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for where, node in target_nodes(doc, path.relative_to(CONFIGS).as_posix()):
            yield pytest.param(where, node, id=where)


def resolve_target(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("where, node", list(cases()))
def test_constructor_defaults_match_the_yaml(where, node):
    target = resolve_target(node["_target_"])
    params = inspect.signature(target).parameters
    drift = {}
    for key, value in node.items():
        if key.startswith("_") or key not in params or params[key].default is inspect.Parameter.empty:
            continue
        if isinstance(value, str) and value.startswith("${"):
            continue  # an interpolation: the value comes from another group
        default = params[key].default
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(value, dict) or isinstance(default, dict):
            continue  # nested option mappings are typed options of their own
        if default != value:
            drift[key] = (default, value)
    assert not drift, f"{where}: constructor default != yaml value: {drift}"


def _compare_options(cls, doc: dict, where: str) -> list[str]:
    """Keys and defaults of an options dataclass against its yaml mapping (interpolations have no default)."""
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    drift = [f"{where}: keys only in the yaml {sorted(set(doc) - set(fields))}, only in {cls.__name__} "
             f"{sorted(set(fields) - set(doc))}"] if set(doc) != set(fields) else []
    defaults = cls()
    for key in set(doc) & set(fields):
        value, default = doc[key], getattr(defaults, key)
        if dataclasses.is_dataclass(hints[key]):
            drift += _compare_options(hints[key], value or {}, f"{where}.{key}")
        elif isinstance(value, str) and value.startswith("${"):
            continue
        elif isinstance(value, dict) and "_target_" in value:
            continue  # a stage of its own (eval's mode.pipeline)
        elif value != default:
            drift.append(f"{where}.{key}: yaml {value!r} != {cls.__name__} {default!r}")
    return drift


def test_group_options_mirror_their_yaml():
    """modules/options.py holds the typed options of the groups without a constructor: the same keys and defaults."""
    from modules.options import GROUP_OPTIONS, MODE_OPTIONS, RayRuntimeOptions, RuntimeOptions

    docs = {f"{group}/default.yaml": cls for group, cls in GROUP_OPTIONS.items()}
    docs.update({f"mode/{name}.yaml": cls for name, cls in MODE_OPTIONS.items()})
    docs["runtime/local.yaml"] = RuntimeOptions
    drift = []
    for rel, cls in docs.items():
        drift += _compare_options(cls, yaml.safe_load((CONFIGS / rel).read_text()), rel)
    ray = yaml.safe_load((CONFIGS / "runtime" / "ray.yaml").read_text())
    ray.pop("defaults")
    drift += _compare_options(RayRuntimeOptions, {**yaml.safe_load((CONFIGS / "runtime" / "local.yaml").read_text()),
                                                  **ray}, "runtime/ray.yaml")
    assert not drift, drift
    assert set(MODE_OPTIONS) == {p.stem for p in (CONFIGS / "mode").glob("*.yaml")}


def test_nested_scale_options_match_the_functions_that_take_them():
    from modules.export.voxel import VOX_MAX_DIM
    from modules.fusion.metric_scale import network_scale
    from modules.fusion.scale import fit_floor_plane
    from modules.options import VOX_MAX_DIM as OPTIONS_VOX_MAX_DIM

    scale = yaml.safe_load((CONFIGS / "config.yaml").read_text())["scale"]
    for key, func in (("floor", fit_floor_plane), ("network", network_scale)):
        params = inspect.signature(func).parameters
        assert {k: params[k].default for k in scale[key]} == scale[key], key
    assert OPTIONS_VOX_MAX_DIM == VOX_MAX_DIM
