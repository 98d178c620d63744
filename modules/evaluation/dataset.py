"""Listing (rgb, ground truth) pairs for evaluation.

A dataset is given as one of:

1. **A list file** (any text file): one pair per line, ``<rgb path> <ground-truth path>``, separated by
   whitespace (quote a path that contains spaces, shell style). Relative paths are relative to the list file's
   folder; absolute paths are kept. Blank lines and lines starting with ``#`` are skipped.
2. **A folder with ``rgb/`` and ``depth/`` sub-folders** (names configurable): every image ``rgb/<stem>.<ext>``
   pairs with the ground truth in ``depth/`` named by the partner rule below.
3. **A flat folder**: every image ``<stem>.<ext>`` pairs with ``<stem>_depth.<gt ext>`` beside it (files whose
   stem ends with the ground-truth suffix are ground truth, never images).
4. **One sub-folder per scene** (used when the folder itself holds no images, e.g. the synthetic rooms of
   ``modules.dataset.synthetic_scene``): ``<scene>/rgb.<ext>`` pairs with ``<scene>/distance.<gt ext>`` or
   ``<scene>/depth.<gt ext>``; the pair is named after the sub-folder.

Partner rule (layouts 2 and 3): for an image stem ``s`` the ground-truth stems tried, in order, are ``s`` (layout 2
only), ``s + "_depth"``, and, when ``s`` ends with ``"_rgb"``, ``s[:-4] + "_depth"`` (Stanford2D3D's
``..._domain_rgb.png`` / ``..._domain_depth.png``); each with the ground-truth extensions in order
(``.png``, ``.npy``, ``.exr``). Image extensions: ``.png``, ``.jpg``, ``.jpeg``.

An image without ground truth, or (in folder layouts) ground truth without an image, is an error that lists the
unmatched files. Pairs are returned sorted by name.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError

__all__ = [
    "EvalPair",
    "DatasetError",
    "DatasetNotFoundError",
    "MissingPartnerError",
    "list_eval_pairs",
    "read_pair_list",
]

_MAX_LISTED = 10


class DatasetError(UserError, ValueError):
    """A dataset description that cannot be used (empty, malformed list file)."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset folder or list file does not exist."""


class MissingPartnerError(UserError, FileNotFoundError):
    """Images without ground truth, ground truth without images, or list entries naming missing files."""


@dataclass(frozen=True)
class EvalPair:
    """One evaluation sample.

    Attributes:
        name: identifier for reports (the image path relative to the dataset root, without extension).
        rgb: path of the image.
        gt: path of the ground-truth file.
    """

    name: str
    rgb: Path
    gt: Path


def _norm_exts(exts: Sequence[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)


def _unmatched_message(kind: str, where: Path, names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"{where}: {len(names)} {kind}: {shown}{more}"


def read_pair_list(list_file: str | os.PathLike) -> list[EvalPair]:
    """Pairs from a list file (see the module docstring).

    Raises:
        DatasetNotFoundError: the list file is missing. DatasetError: a line has not exactly two paths, or no pairs.
        MissingPartnerError: listed files that do not exist (all of them are named).
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DatasetNotFoundError(f"dataset list file not found: {list_file}")
    root = list_file.parent
    pairs, missing = [], []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = shlex.split(stripped)
        except ValueError as exc:
            raise DatasetError(f"{list_file}:{number}: cannot parse line ({exc})") from exc
        if len(fields) != 2:
            raise DatasetError(f"{list_file}:{number}: expected '<rgb path> <gt path>', got {len(fields)} field(s)")
        rgb, gt = (root / f for f in fields)
        for path in (rgb, gt):
            if not path.is_file():
                missing.append(f"line {number}: {path}")
        name = Path(fields[0]).with_suffix("").as_posix()
        pairs.append(EvalPair(name, rgb, gt))
    if missing:
        raise MissingPartnerError(_unmatched_message("listed files do not exist", list_file, missing))
    if not pairs:
        raise DatasetError(f"{list_file}: the list file names no pairs")
    return pairs


def _gt_candidates(stem: str, gt_suffix: str, rgb_suffix: str, allow_same_stem: bool) -> list[str]:
    stems = [stem] if allow_same_stem else []
    stems.append(stem + gt_suffix)
    if rgb_suffix and stem.endswith(rgb_suffix):
        stems.append(stem[: -len(rgb_suffix)] + gt_suffix)
    return stems


def _pair_folder(
    rgb_dir: Path,
    gt_dir: Path,
    root: Path,
    rgb_exts: tuple[str, ...],
    gt_exts: tuple[str, ...],
    gt_suffix: str,
    rgb_suffix: str,
    flat: bool,
) -> list[EvalPair]:
    gt_files = {p.name: p for p in gt_dir.iterdir() if p.is_file() and p.suffix.lower() in gt_exts}
    images = [
        p
        for p in sorted(rgb_dir.iterdir())
        if p.is_file() and p.suffix.lower() in rgb_exts and not (flat and p.stem.endswith(gt_suffix))
    ]
    pairs, no_gt, used = [], [], set()
    for image in images:
        match = None
        for stem in _gt_candidates(image.stem, gt_suffix, rgb_suffix, allow_same_stem=not flat):
            match = next((gt_files[stem + ext] for ext in gt_exts if stem + ext in gt_files), None)
            if match is not None:
                break
        if match is None:
            no_gt.append(image.name)
            continue
        used.add(match.name)
        pairs.append(EvalPair(image.relative_to(root).with_suffix("").as_posix(), image, match))
    if no_gt:
        raise MissingPartnerError(_unmatched_message("image(s) without ground truth", gt_dir, no_gt))
    orphans = sorted(
        name
        for name, path in gt_files.items()
        if name not in used and (not flat or Path(name).stem.endswith(gt_suffix))
    )
    if orphans:
        raise MissingPartnerError(_unmatched_message("ground-truth file(s) without an image", rgb_dir, orphans))
    return pairs


def _first_file(folder: Path, stems: Sequence[str], exts: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in exts:
            if (folder / (stem + ext)).is_file():
                return folder / (stem + ext)
    return None


def _pair_scene_folders(
    source: Path, rgb_exts: tuple[str, ...], gt_exts: tuple[str, ...], rgb_stem: str, gt_stems: Sequence[str]
) -> list[EvalPair]:
    pairs, unmatched = [], []
    for scene in sorted(p for p in source.iterdir() if p.is_dir()):
        rgb = _first_file(scene, [rgb_stem], rgb_exts)
        gt = _first_file(scene, gt_stems, gt_exts)
        if rgb is not None and gt is not None:
            pairs.append(EvalPair(scene.name, rgb, gt))
        elif rgb is not None:
            unmatched.append(f"{scene.name}/ (no {' or '.join(gt_stems)} file)")
        elif gt is not None:
            unmatched.append(f"{scene.name}/ (no {rgb_stem} image)")
    if unmatched:
        raise MissingPartnerError(_unmatched_message("scene folder(s) without a partner", source, unmatched))
    return pairs


def list_eval_pairs(
    source: str | os.PathLike,
    rgb_extensions: Sequence[str] = (".png", ".jpg", ".jpeg"),
    gt_extensions: Sequence[str] = (".png", ".npy", ".exr"),
    gt_suffix: str = "_depth",
    rgb_suffix: str = "_rgb",
    rgb_dirname: str = "rgb",
    gt_dirname: str = "depth",
    scene_rgb_stem: str = "rgb",
    scene_gt_stems: Sequence[str] = ("distance", "depth"),
) -> list[EvalPair]:
    """All (rgb, ground truth) pairs of a dataset: a list file, a folder with ``rgb/`` + ``depth/``, a flat
    folder, or one sub-folder per scene (see the module docstring for the naming rules).

    Raises:
        DatasetNotFoundError: ``source`` does not exist. MissingPartnerError: unmatched files (named in the message).
        DatasetError: no pairs found.
    """
    source = Path(source)
    if source.is_file():
        return read_pair_list(source)
    if not source.is_dir():
        raise DatasetNotFoundError(f"evaluation dataset not found: {source} (expected a folder or a list file)")
    rgb_exts, gt_exts = _norm_exts(rgb_extensions), _norm_exts(gt_extensions)
    rgb_dir, gt_dir = source / rgb_dirname, source / gt_dirname
    if rgb_dir.is_dir() and gt_dir.is_dir():
        pairs = _pair_folder(rgb_dir, gt_dir, source, rgb_exts, gt_exts, gt_suffix, rgb_suffix, flat=False)
    else:
        pairs = _pair_folder(source, source, source, rgb_exts, gt_exts, gt_suffix, rgb_suffix, flat=True)
        if not pairs:
            pairs = _pair_scene_folders(source, rgb_exts, gt_exts, scene_rgb_stem, scene_gt_stems)
    if not pairs:
        raise DatasetError(
            f"{source}: no images found (extensions {', '.join(rgb_exts)}; flat folder, '{rgb_dirname}/' + "
            f"'{gt_dirname}/' sub-folders, or scene folders with {scene_rgb_stem}.<ext> + "
            f"{' or '.join(scene_gt_stems)}.<ext>)"
        )
    return sorted(pairs, key=lambda p: p.name)
