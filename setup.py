"""Ships the top-level configs/ inside the package (as modules/configs) when a wheel is built; everything else is in
pyproject.toml. configs/local/ (untracked, per-machine overrides) is left out."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "modules" / "configs"
        shutil.rmtree(target, ignore_errors=True)
        for src in sorted((ROOT / "configs").rglob("*.yaml")):
            rel = src.relative_to(ROOT / "configs")
            if rel.parts[0] == "local":
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)


setup(cmdclass={"build_py": BuildPyWithConfigs})
