"""No GPL/AGPL runtime dependency (the project is MIT): the check passes on this install and fails if plyfile (GPL-3.0+)
came back."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_licences", ROOT / "tools" / "check_licences.py")
check_licences = importlib.util.module_from_spec(spec)
sys.modules.setdefault("check_licences", check_licences)  # dataclasses look their module up
spec.loader.exec_module(check_licences)


def test_installed_runtime_dependencies_are_not_copyleft(capsys):
    licences, missing = check_licences.check(["all"])
    core = {r.name.lower().replace("_", "-") for r in check_licences.runtime_requirements([])}
    assert not core & set(missing), f"core dependencies not installed: {core & set(missing)}"
    names = {lic.name.lower().replace("_", "-") for lic in licences}
    assert {"torch", "hydra-core", "transformers", "numpy"} <= names  # the closure was walked
    assert "plyfile" not in names
    assert [lic for lic in licences if lic.copyleft] == []
    assert check_licences.main([]) == 0
    assert "none GPL/AGPL" in capsys.readouterr().out


@pytest.mark.parametrize("text, copyleft", [
    ("GPL-3.0-or-later", True),
    ("AGPL-3.0-only", True),
    ("GNU General Public License v3 or later (GPLv3+)", True),
    ("GNU Affero General Public License v3", True),
    ("GPLv2", True),
    ("LGPL-3.0-or-later", False),
    ("GNU Lesser General Public License v2 or later (LGPLv2+)", False),
    ("MIT OR GPL-2.0-or-later", False),  # dual licence with a permissive choice
    ("GPL-2.0-only OR GPL-3.0-only", True),
    ("BSD-3-Clause", False),
    ("Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND BSD-2-Clause", False),
])
def test_licence_classification(text, copyleft):
    assert check_licences.is_copyleft(text) is copyleft


def _fake_dist(site: Path, name: str, version: str, lines: list[str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                                              *lines]) + "\n")


def test_the_check_fails_if_plyfile_came_back(tmp_path, monkeypatch, capsys):
    """plyfile 1.1's metadata as published (GPLv3+ classifier, the GPL's text as its License field), installed and
    required again: the check names it and exits 1."""
    site = tmp_path / "site"
    _fake_dist(site, "plyfile", "1.1.5", [
        "License: GNU GENERAL PUBLIC LICENSE\n        Version 3, 29 June 2007",
        "Classifier: License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Requires-Dist: numpy>=1.21",
    ])
    monkeypatch.syspath_prepend(str(site))
    project = check_licences._pyproject()
    project["project"]["dependencies"] = [*project["project"]["dependencies"], "plyfile>=1.0"]
    monkeypatch.setattr(check_licences, "_pyproject", lambda: project)
    licences, _ = check_licences.check([])
    bad = [lic for lic in licences if lic.copyleft]
    assert [b.name for b in bad] == ["plyfile"]
    assert check_licences.main(["--extras"]) == 1
    assert "GPL/AGPL runtime dependencies: plyfile" in capsys.readouterr().err


def test_plyfile_is_not_imported_anywhere():
    hits = [p for p in (ROOT / "modules").rglob("*.py") if "import plyfile" in p.read_text()
            or "from plyfile" in p.read_text()]
    assert hits == []
    assert "plyfile" not in (ROOT / "pyproject.toml").read_text()
