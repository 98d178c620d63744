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
