"""List the licence of every installed runtime dependency of ImmersiveDepth and fail on GPL / AGPL ones.

The runtime dependencies are pyproject.toml's ``dependencies`` plus those of the extras named (default: ``all``),
followed through every installed distribution's ``Requires-Dist`` (markers evaluated; optional extras of
dependencies are not followed). LGPL is allowed (a Python import is dynamic linking); a dual licence with a
permissive choice (``MIT OR GPL-2.0``) is allowed. Test-only tools ([dev]) are not runtime dependencies.

    python tools/check_licences.py            # table + exit 1 when a copyleft dependency is installed
    python tools/check_licences.py --extras mesh previews
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["Licence", "runtime_requirements", "dependency_closure", "licence_of", "is_copyleft", "check"]


@dataclass(frozen=True)
class Licence:
    name: str  # distribution name as installed
    version: str
    text: str  # the licence as the metadata states it (expression, short License field or classifiers)
    copyleft: bool


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements(extras: list[str]) -> list[Requirement]:
    """pyproject's core dependencies plus those of ``extras`` (self-references like ``immersivedepth[mesh]`` are
    expanded)."""
    project = _pyproject()["project"]
    optional = project.get("optional-dependencies", {})
    name = canonicalize_name(project["name"])
    reqs, todo, seen = [Requirement(r) for r in project.get("dependencies", [])], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}; extras: {', '.join(sorted(optional))}")
        for r in map(Requirement, optional[extra]):
            if canonicalize_name(r.name) == name:
                todo.extend(r.extras)
            else:
                reqs.append(r)
    return reqs


def _applies(req: Requirement, extra: str = "") -> bool:
    if req.marker is None:
        return True
    env = dict(default_environment())
    env["extra"] = extra
    return req.marker.evaluate(env)


def dependency_closure(roots: list[Requirement]) -> tuple[dict[str, metadata.Distribution], list[str]]:
    """(installed distributions reachable from ``roots`` by canonical name, names required but not installed)."""
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo = [(r, "") for r in roots]
    while todo:
        req, extra = todo.pop()
        if not _applies(req, extra):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if key not in missing:
                missing.append(key)
            continue
        found[key] = dist
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            # an optional extra of the dependency is followed only when our requirement asked for it
            wanted = [e for e in req.extras] or [""]
            for e in wanted:
                if _applies(sub_req, e):
                    todo.append((sub_req, ""))
                    break
    return found, sorted(missing)


_PERMISSIVE_HINT = re.compile(r"\b(MIT|BSD|Apache|ISC|PSF|Python|MPL|Zlib|Unlicense|CC0|HPND|LGPL)", re.I)


def is_copyleft(licence: str) -> bool:
    """GPL or AGPL (any version), not LGPL; an SPDX ``OR`` with a non-copyleft alternative is not copyleft."""
    text = licence.strip()
    if not text:
        return False
    alternatives = re.split(r"\s+OR\s+", text) if len(text) < 300 else [text]
    return all(_one_copyleft(a) for a in alternatives)


def _one_copyleft(text: str) -> bool:
    t = text.replace("(", " ").replace(")", " ")
    if re.search(r"\b(A?GPL)(-?v?\d(\.\d)?)?\b", t) and not re.search(r"\bLGPL", t):
        return True
    if re.search(r"GNU (Affero )?General Public License", t, re.I) and not re.search(r"Lesser|Library", t, re.I):
        return True
    return False


def licence_of(dist: metadata.Distribution) -> Licence:
    md = dist.metadata
    expression = md.get("License-Expression") or ""
    field = (md.get("License") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in md.get_all("Classifier") or [] if c.startswith("License ::")]
    if expression:
        text = expression
    elif classifiers:
        text = " OR ".join(classifiers) if len(classifiers) > 1 else classifiers[0]
    else:
        # a short License field is a name; a long one is the licence's full text: its first line names it
        text = field if len(field) < 120 else field.splitlines()[0][:120]
    return Licence(md["Name"], dist.version, text or "UNKNOWN", is_copyleft(text))


def check(extras: list[str]) -> tuple[list[Licence], list[str]]:
    """(licence of every installed runtime dependency, names required but not installed)."""
    found, missing = dependency_closure(runtime_requirements(extras))
    return sorted((licence_of(d) for d in found.values()), key=lambda lic: lic.name.lower()), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", nargs="*", default=["all"], help="extras whose dependencies count (default: all)")
    args = parser.parse_args(argv)
    licences, missing = check(args.extras)
    width = max(len(lic.name) for lic in licences)
    for lic in licences:
        flag = "COPYLEFT" if lic.copyleft else "ok"
        print(f"{lic.name:<{width}}  {lic.version:<12}  {flag:<8}  {lic.text}")
    if missing:
        print(f"not installed (not checked): {', '.join(missing)}")
    bad = [lic for lic in licences if lic.copyleft]
    if bad:
        print(f"GPL/AGPL runtime dependencies: {', '.join(f'{b.name} ({b.text})' for b in bad)}", file=sys.stderr)
        return 1
    print(f"{len(licences)} runtime dependencies, none GPL/AGPL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
