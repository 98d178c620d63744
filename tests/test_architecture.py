"""The import-layer rule of docs/architecture.md, checked on the source (every import, module level or lazy).

Layers, lowest first; a module may import its own layer and the ones below it, never one above, and the module
graph has no cycles. A new top-level package under modules/ must be given a layer here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "modules"

#: lowest first; names are the first component below ``modules`` (a package or a top-level file)
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors", "config", "device", "robust", "extras", "options"),  # base: user errors, config helpers, the device
    # policy, robust statistics, optional packages (require(): a missing extra is a UserError naming it)
    ("geometry",),
    ("dataset",),
    ("geo_predictors",),
    ("fusion",),
    ("pipeline", "predictor_cache"),
    ("export",),
    ("evaluation",),
    ("runtime",),
    ("modes",),
    ("cli", "api", "validation"),  # the entry points: the command line and the Python API (run(mode=...) runs a mode)
    ("app",),  # the web app: uses api.py only (no stage of its own)
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for p in MODULES.rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Every ``modules.*`` module ``path`` (the module ``name``) imports anywhere in the file, as dotted names."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "modules")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "modules":
                continue
            found.add(target)
            for alias in node.names:  # ``from . import x`` may name a submodule
                sub = f"{target}.{alias.name}"
                if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (ROOT / Path(*sub.split("."))).is_dir():
                    found.add(sub)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in source_files()}


def edges_between_layers() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for mod, targets in graph().items():
        for t in targets:
            a, b = layer_of(mod), layer_of(t)
            if a != b:
                out.setdefault((a, b), []).append(f"{mod} -> {t}")
    return out


def test_every_top_level_module_has_a_layer():
    names = {layer_of(module_name(p)) for p in source_files()}
    missing = sorted(names - set(RANK))
    assert not missing, f"give these a layer in tests/test_architecture.py and docs/architecture.md: {missing}"


def test_no_import_runs_up_a_layer():
    bad = [
        line
        for (a, b), lines in sorted(edges_between_layers().items())
        if RANK.get(b, -1) > RANK.get(a, -1)
        for line in lines
    ]
    assert not bad, "imports running up a layer:\n" + "\n".join(bad)


def test_runtime_and_fusion_never_import_modes():
    edges = edges_between_layers()
    for importer in ("runtime", "fusion", "pipeline", "export"):
        assert (importer, "modes") not in edges, f"modules/{importer} imports modules/modes: {edges[importer, 'modes']}"


def test_no_import_cycles():
    g = graph()
    g = {m: {t for t in ts if t in g} for m, ts in g.items()}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in g[v]:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    # a package's __init__ re-exporting its own submodules is not a cycle of the design
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c[1:])
              or not (ROOT / Path(*c[0].split(".")) / "__init__.py").exists()]
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_relative_and_lazy_imports(tmp_path):
    """The parser resolves relative imports at any depth and finds imports inside functions (so none can hide)."""
    src = tmp_path / "worker.py"
    src.write_text(
        "from ..dataset.io import load_panorama\n"
        "from . import staging\n"
        "def f():\n"
        "    from ..modes.common import build_pipeline\n"
        "    import modules.export.atomic\n"
    )
    found = imports_of(src, "modules.runtime.worker")
    assert {"modules.dataset.io", "modules.runtime", "modules.runtime.staging", "modules.modes.common",
            "modules.export.atomic"} <= found
    assert ("pipeline", "fusion") in edges_between_layers()


#: the size guide of docs/architecture.md: a longer module says why in its docstring's "Size (over ..." paragraph
MAX_LINES = 450


def test_long_modules_say_why_in_their_header():
    import ast

    unexplained = []
    for path in source_files():
        lines = path.read_text().count("\n")
        if lines > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if "Size (over" not in doc:
                unexplained.append(f"{path} ({lines} lines)")
    assert not unexplained, f"split these or give the reason in the module docstring: {unexplained}"


def test_the_design_cards_top_level_layout():
    """The product's design card fixes the top level; requirements.txt installs the package with every extra (the
    ranges of pyproject.toml, one source), and the project carries its MIT licence text."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = ROOT
    for name in ("core_exp_runner.py", "configs", "modules", "pre_checkpoints", "example_data", "tools", "tests",
                 "requirements.txt", "README.md", "LICENSE"):
        assert (root / name).exists(), name
    lines = [x.strip() for x in (root / "requirements.txt").read_text().splitlines()]
    assert [x for x in lines if x and not x.startswith("#")] == [".[all]"]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "all" in project["optional-dependencies"] and project["license"] == "MIT"
    assert (root / "LICENSE").read_text().startswith("MIT License")
