"""Finding, downloading and reading depth-network weights.

``weights`` (a predictor's config key) may be:

- ``null``: the variant's default. Looked for, in order: ``<checkpoint_dir>/<hf_id>/`` (Hugging Face format, as
  ``python -m tools.download_checkpoints`` writes it), ``<checkpoint_dir>/<upstream file>`` (e.g.
  ``dpt_beit_large_512.pt``, converted on load), the Hugging Face cache, and finally a download into
  ``<checkpoint_dir>/<hf_id>/`` when downloads are allowed and the machine is online.
- a Hugging Face model id (``Intel/dpt-beit-large-512``): the same search with that id.
- ``random``: a randomly initialised model without searching (needs ``allow_random_weights``; benchmarks, tests).
- a path (absolute, or relative to ``checkpoint_dir`` or the working directory) to a Hugging Face model directory
  (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) or to a single state-dict file (upstream release
  ``.pt`` / ``.pth``, or a Hugging Face-named ``.safetensors`` / ``.bin``).

Missing weights raise :class:`WeightsNotFoundError` naming every place searched and the command that gets them,
unless ``allow_random_weights`` is set (benchmarks and tests only): then the caller builds a randomly initialised
model and records that in its ``describe()``. Pickled files are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .checkpoint_conversion import unwrap_state_dict
from .errors import CheckpointFormatError, PredictorConfigError, WeightsNotFoundError

__all__ = [
    "ResolvedWeights",
    "WeightsNotFoundError",
    "WeightsSpec",
    "download_hf_snapshot",
    "download_note",
    "find_local_weights",
    "hub_unreachable",
    "missing_weights_lines",
    "hf_dir_for",
    "hub_offline",
    "is_hf_model_dir",
    "load_state_dict_file",
    "resolve_weights",
]

log = logging.getLogger(__name__)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class WeightsSpec:
    """What a predictor variant needs to find its weights (filled from the variant table)."""

    predictor: str  # config name of the predictor, e.g. "midas_v31"
    variant: str  # e.g. "beit_large_512"
    family: str  # human name, e.g. "MiDaS v3.1"
    hf_id: str  # default Hugging Face model id
    upstream_file: str  # upstream release file name ("" when only the Hugging Face format is supported)
    upstream_url: str  # where the upstream file is published


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a predictor's weights come from.

    ``source``: ``hf_dir`` (a Hugging Face model directory), ``state_dict_file`` (a single file, upstream or
    Hugging Face-named) or ``random`` (none found, ``allow_random_weights`` set). ``origin`` says how it was found.
    """

    source: Literal["hf_dir", "state_dict_file", "random"]
    path: Path | None
    origin: str
    repo_id: str | None = None


def hf_dir_for(checkpoint_dir: str | os.PathLike, repo_id: str) -> Path:
    """``<checkpoint_dir>/<owner>/<name>``: where a Hugging Face model id is stored in ``pre_checkpoints/``."""
    return Path(checkpoint_dir) / Path(*repo_id.split("/"))


def is_hf_model_dir(path: str | os.PathLike) -> bool:
    """A directory with ``config.json`` and a weights file in Hugging Face layout."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any((path / f).is_file() for f in _WEIGHT_FILES)


def hub_offline() -> bool:
    """Whether Hugging Face Hub access is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return True


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a single weights file to a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling errors have many types
            raise CheckpointFormatError(f"{path}: cannot be read as a weights-only torch checkpoint ({err})") from err
    return unwrap_state_dict(obj, source=str(path))


def _fetch_command(spec: WeightsSpec) -> str:
    return f"python -m tools.download_checkpoints --predictor {spec.predictor} --variant {spec.variant}"


def download_hf_snapshot(repo_id: str, checkpoint_dir: str | os.PathLike) -> Path:
    """Download a Hugging Face model (config + weights, safetensors preferred) into ``<checkpoint_dir>/<repo_id>``.

    The files land in a temporary folder beside the target first and the folder is renamed into place at the end,
    so an interrupted download never leaves a half-filled model directory. Returns the directory.
    """
    from huggingface_hub import HfApi, snapshot_download

    target = hf_dir_for(checkpoint_dir, repo_id)
    if is_hf_model_dir(target):
        return target
    files = set(HfApi().list_repo_files(repo_id))
    if "model.safetensors" in files or "model.safetensors.index.json" in files:
        patterns = ["*.json", "*.safetensors"]
    else:
        patterns = ["*.json", "pytorch_model*.bin"]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        snapshot_download(repo_id, local_dir=tmp, allow_patterns=patterns)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        if not is_hf_model_dir(tmp):
            raise WeightsNotFoundError(f"Hugging Face repo {repo_id} holds no config.json + model weights")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hf_cache_dir(repo_id: str) -> Path | None:
    """The local Hugging Face cache snapshot of ``repo_id``, if one is there (no network)."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unusable cache entry
        return None
    return path if is_hf_model_dir(path) else None


def _existing_path(weights: str, checkpoint_dir: Path) -> Path | None:
    raw = Path(weights).expanduser()
    candidates = [raw] if raw.is_absolute() else [checkpoint_dir / raw, Path.cwd() / raw]
    return next((c for c in candidates if c.exists()), None)


def _from_path(path: Path) -> ResolvedWeights:
    if path.is_dir():
        if not is_hf_model_dir(path):
            raise WeightsNotFoundError(
                f"weights directory {path} is not a Hugging Face model directory "
                f"(needs config.json and one of {', '.join(_WEIGHT_FILES)})"
            )
        return ResolvedWeights("hf_dir", path, f"local Hugging Face directory {path}")
    if path.suffix not in _STATE_DICT_SUFFIXES:
        raise PredictorConfigError(
            f"weights file {path} has an unsupported suffix; expected one of {_STATE_DICT_SUFFIXES}"
        )
    return ResolvedWeights("state_dict_file", path, f"state-dict file {path}")


def find_local_weights(
    spec: WeightsSpec, weights: str | None, checkpoint_dir: str | os.PathLike
) -> tuple[ResolvedWeights | None, list[str], str | None]:
    """Look for the weights of ``spec`` on this machine only (no network): the search of :func:`resolve_weights`
    without its download. Returns (what was found or None, the places looked in, the Hugging Face id a download
    would fetch or None when ``weights`` names a file that is not there).

    Raises:
        WeightsNotFoundError / PredictorConfigError: ``weights`` names a path that cannot be used, or ``random``.
    """
    checkpoint_dir = Path(checkpoint_dir).expanduser().resolve()
    looked: list[str] = []
    weights = str(weights).strip() if weights not in (None, "") else None
    if weights == "random":
        raise PredictorConfigError(f"{spec.family}: weights: random is not searched for")
    if weights is not None:
        path = _existing_path(weights, checkpoint_dir)
        if path is not None:
            return _from_path(path), looked, None
        if not _REPO_ID.match(weights) or weights.endswith(_STATE_DICT_SUFFIXES):
            looked.append(f"{weights} (as given, under {checkpoint_dir} and under {Path.cwd()})")
            return None, looked, None
    repo_id = weights or spec.hf_id
    local = hf_dir_for(checkpoint_dir, repo_id)
    looked.append(f"{local} (Hugging Face format)")
    if is_hf_model_dir(local):
        return ResolvedWeights("hf_dir", local, f"{repo_id} from {local}", repo_id), looked, repo_id
    if weights is None and spec.upstream_file:
        upstream = checkpoint_dir / spec.upstream_file
        looked.append(f"{upstream} (upstream release file)")
        if upstream.is_file():
            return (ResolvedWeights("state_dict_file", upstream, f"upstream file {upstream} (converted on load)"),
                    looked, repo_id)
    cached = _hf_cache_dir(repo_id)
    looked.append(f"the Hugging Face cache for {repo_id}")
    if cached is not None:
        return ResolvedWeights("hf_dir", cached, f"{repo_id} from the Hugging Face cache ({cached})", repo_id), looked, \
            repo_id
    return None, looked, repo_id


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """None when the Hugging Face Hub's host accepts a connection within ``timeout`` seconds, else why not.

    One TCP connection, no retries: huggingface_hub retries a failed request five times with back-off (about 25 s
    of silence on a machine without network), so a download is only started once this answers.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached: {err.strerror or err}"


def download_note(allow_download: bool) -> str | None:
    """Why missing weights will not be downloaded now (None: a download can start)."""
    if not allow_download:
        return "downloads are off (allow_download: false)"
    if hub_offline():
        return "downloads are off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)"
    return hub_unreachable()


def resolve_weights(
    spec: WeightsSpec,
    weights: str | None,
    checkpoint_dir: str | os.PathLike,
    allow_download: bool,
    allow_random_weights: bool,
) -> ResolvedWeights:
    """Find the weights for ``spec`` (search order in the module header); local weights never touch the network.

    Raises:
        WeightsNotFoundError: nothing found, no download possible, and ``allow_random_weights`` is false.
    """
    checkpoint_dir = Path(checkpoint_dir).expanduser().resolve()
    weights = str(weights).strip() if weights not in (None, "") else None
    if weights == "random":
        if not allow_random_weights:
            raise PredictorConfigError(
                f"{spec.family}: weights: random needs allow_random_weights: true (benchmarks and tests only)"
            )
        log.warning("%s (%s): RANDOM weights (weights: random)", spec.family, spec.variant)
        return ResolvedWeights("random", None, "random initialisation (weights: random)", None)
    found, looked, repo_id = find_local_weights(spec, weights, checkpoint_dir)
    if found is not None:
        return found
    if repo_id is None:
        return _not_found(spec, checkpoint_dir, looked, allow_random_weights, download_note="", repo_id=None)
    note = download_note(allow_download)
    if note is None:
        try:
            log.warning("%s (%s): weights not on this machine; downloading %s from the Hugging Face Hub into %s",
                        spec.family, spec.variant, repo_id, hf_dir_for(checkpoint_dir, repo_id))
            path = download_hf_snapshot(repo_id, checkpoint_dir)
            log.info("downloaded %s into %s", repo_id, path)
            return ResolvedWeights("hf_dir", path, f"{repo_id} downloaded into {path}", repo_id)
        except Exception as err:  # network, auth, missing repo: all end in the one clear error below
            note = f"the download of {repo_id} failed ({type(err).__name__}: {err})"
    return _not_found(spec, checkpoint_dir, looked, allow_random_weights, download_note=note, repo_id=repo_id)


def missing_weights_lines(spec: WeightsSpec, checkpoint_dir: str | os.PathLike, looked: list[str],
                          download: str | None) -> list[str]:
    """What to tell a user whose weights for ``spec`` are missing: where we looked, why nothing was downloaded, and
    how to get them (the fetch command; the upstream file's name and where to put it)."""
    checkpoint_dir = Path(checkpoint_dir).expanduser().resolve()
    lines = [
        f"{spec.family} weights for variant '{spec.variant}' not found.",
        f"Looked in: {'; '.join(looked)}.",
    ]
    if download:
        lines.append(f"Not downloaded: {download}.")
    lines += [
        f"Get them on a machine with internet access with:  {_fetch_command(spec)}",
        "  (and copy pre_checkpoints/ over if this machine is offline)" + ("," if spec.upstream_file else "."),
    ]
    if spec.upstream_file:
        lines.append(
            f"or put the upstream release file {spec.upstream_file} ({spec.upstream_url}) into {checkpoint_dir}/ "
            "(it is converted on load)."
        )
    return lines


def _not_found(
    spec: WeightsSpec,
    checkpoint_dir: Path,
    looked: list[str],
    allow_random_weights: bool,
    download_note: str,
    repo_id: str | None,
) -> ResolvedWeights:
    if allow_random_weights:
        log.warning(
            "%s (%s): no weights found (%s); using RANDOM weights because allow_random_weights is set - "
            "outputs are meaningless as depth",
            spec.family,
            spec.variant,
            "; ".join(looked),
        )
        return ResolvedWeights("random", None, "random initialisation (allow_random_weights: true)", repo_id)
    raise WeightsNotFoundError("\n".join(missing_weights_lines(spec, checkpoint_dir, looked, download_note)))
