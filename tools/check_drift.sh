#!/usr/bin/env bash
# Drift check: resolve the NEWEST versions pyproject.toml allows (no lock), list what moved past requirements.lock,
# and run a smoke subset of the tests against them. Exit 0: the newest allowed set passes; 1: it fails (users who
# `pip install immersivedepth` today would hit it: fix the code or tighten the range, then `bash tools/lock.sh`).
#
# Cheap: a throw-away venv layered over the current environment (a .pth file), so only the packages that have newer
# releases are downloaded; torch stays the installed build (the user's choice, not a resolved dependency).
#   bash tools/check_drift.sh              # with the active environment's python
#   PYTHON=/path/to/python bash tools/check_drift.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
SMOKE=(tests/test_predictors_conversion.py tests/test_predictors_inference.py tests/test_api.py tests/test_ply.py
       tests/test_extras.py tests/test_export_dense.py tests/test_licences.py)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv --without-pip "$tmp/venv"
site="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' > "$site/_base_env.pth"
torch_version="$("$PY" -c 'import torch; print(torch.__version__)')"
echo "drift check: newest versions allowed by pyproject.toml (torch stays $torch_version)"
"$tmp/venv/bin/python" -m pip install -q --upgrade --upgrade-strategy eager "torch==$torch_version" -e ".[all,dev]"
"$tmp/venv/bin/python" - <<'PY'
import re
from importlib import metadata
from pathlib import Path

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {}
for line in Path("requirements.lock").read_text().splitlines():
    if "==" in line and not line.startswith("#"):
        name, version = line.split("==", 1)
        lock[norm(name)] = version.strip()
moved = []
for name, locked in sorted(lock.items()):
    try:
        now = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue
    if now != locked:
        moved.append(f"  {name}: {locked} -> {now}")
print(f"{len(moved)} of {len(lock)} locked packages have newer allowed versions" + (":" if moved else ""))
print("\n".join(moved))
PY
echo "smoke subset against them: ${SMOKE[*]}"
"$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider "${SMOKE[@]}"
