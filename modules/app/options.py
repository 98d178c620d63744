"""What the form offers, and how a submitted form becomes config overrides for :func:`modules.api.run`.

Only the fields below are accepted (each checked against its choices or range); the user never passes raw overrides
or paths. The form's initial values are the config's own defaults (composed once from configs/), so the app adds no
second default for any key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from ..config import PROJECT_ROOT
from ..errors import UserError
from ..geo_predictors.depth_anything import DepthAnythingV2Predictor
from ..geo_predictors.depth_pro import DepthProPredictor
from ..geo_predictors.errors import WeightsNotFoundError
from ..geo_predictors.midas import MidasPredictor
from ..geo_predictors.weights import WeightsSpec, resolve_weights
from ..fusion.scale import SCALE_METHODS as _SCALE_METHODS

__all__ = ["FormError", "JobOptions", "parse_form", "form_defaults", "weights_status", "examples", "NETWORKS",
           "PREDICTORS", "MESH_FORMATS", "SCALE_METHODS", "missing_weights", "SYNTHETIC_LABEL", "network_overrides",
           "default_choices"]

#: the network families by config name
NETWORKS = {cls.predictor_name: cls for cls in (MidasPredictor, DepthAnythingV2Predictor, DepthProPredictor)}
#: predictor choices of the form (config group options); joint_metric = joint + a metric member for the scale only
PREDICTORS = ("joint", "joint_metric", "midas_v31", "depth_anything_v2", "depth_pro", "synthetic")
#: the networks each predictor builds (predictor=joint_metric's metric member is optional under scale.method=auto)
_MEMBERS = {"joint": ("midas_v31", "depth_anything_v2"), "joint_metric": ("midas_v31", "depth_anything_v2"),
            "midas_v31": ("midas_v31",), "depth_anything_v2": ("depth_anything_v2",), "depth_pro": ("depth_pro",),
            "synthetic": ()}
ALIGNMENTS = tuple(sorted(p.stem for p in (PROJECT_ROOT / "configs" / "alignment").glob("*.yaml")))
REFINEMENTS = tuple(sorted(p.stem for p in (PROJECT_ROOT / "configs" / "refinement").glob("*.yaml")))
MESH_FORMATS = ("ply", "obj", "glb", "fbx")
SCALE_METHODS = _SCALE_METHODS
SYNTHETIC_LABEL = ("synthetic predictor: the true distances of the scene, corrupted per face the way networks err, "
                   "then stitched by the pipeline - a ground-truth-backed demo, not a depth estimate of a photo")

EXAMPLE_DIR = PROJECT_ROOT / "example_data"
SYNTHETIC_EXAMPLE = "synthetic_room"


class FormError(UserError):
    """A form field with a value the app does not accept."""


@dataclass
class JobOptions:
    """A validated form. ``overrides`` go to :func:`modules.api.run` after the server's own (device, downloads)."""

    predictor: str
    overrides: list[str] = field(default_factory=list)
    splats: bool = False
    formats: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.predictor == "synthetic"


def _choice(form: Mapping[str, str], name: str, choices, default: str) -> str:
    value = str(form.get(name) or default)
    if value not in choices:
        raise FormError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def _number(form: Mapping[str, str], name: str, kind, lo, hi, default, optional: bool = False):
    raw = form.get(name)
    if raw is None or str(raw).strip() == "":
        if optional:
            return None
        return default
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise FormError(f"{name}: {raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if not lo <= value <= hi:
        raise FormError(f"{name}: {value} is outside [{lo}, {hi}]")
    return value


def _flag(form: Mapping[str, str], name: str, default: bool) -> bool:
    raw = form.get(name)
    if raw is None:
        return default
    return str(raw).lower() in ("1", "true", "on", "yes")


def form_defaults(cfg: DictConfig) -> dict[str, Any]:
    """Initial form values, read from the composed config (configs/ is the one place defaults live)."""
    from ..api import compose

    dense = cfg.export.dense
    choices = default_choices()
    return {
        "predictor": choices["predictor"],
        "midas_variant": str(compose(["predictor=midas_v31"]).predictor.variant),
        "depth_anything_variant": str(compose(["predictor=depth_anything_v2"]).predictor.variant),
        "alignment": choices["alignment"],
        "refinement": choices["refinement"],
        "scale_method": str(cfg.scale.method),
        "camera_height": cfg.scale.camera_height,
        "face_size": int(cfg.projection.face_size),
        "mesh_stride": int(dense.mesh.stride),
        "formats": list(dense.files.formats),
        "close_poles": bool(dense.mesh.close_poles),
        "decimate_faces": dense.mesh.decimate_faces,
        "splats": bool(dense.splats.enabled),
        "splat_stride": int(dense.splats.stride),
    }


def parse_form(form: Mapping[str, Any], defaults: Mapping[str, Any]) -> JobOptions:
    """A submitted form -> overrides. Raises FormError naming the field for anything out of range."""
    predictor = _choice(form, "predictor", PREDICTORS, defaults["predictor"])
    midas = _choice(form, "midas_variant", tuple(MidasPredictor.variants), defaults["midas_variant"])
    dav2 = _choice(form, "depth_anything_variant", tuple(DepthAnythingV2Predictor.variants),
                   defaults["depth_anything_variant"])
    alignment = _choice(form, "alignment", ALIGNMENTS, defaults["alignment"])
    refinement = _choice(form, "refinement", REFINEMENTS, defaults["refinement"])
    scale_method = _choice(form, "scale_method", SCALE_METHODS, defaults["scale_method"])
    camera_height = _number(form, "camera_height", float, 0.05, 100.0, None, optional=True)
    face_size = _number(form, "face_size", int, 32, 2048, defaults["face_size"])
    mesh_stride = _number(form, "mesh_stride", int, 1, 64, defaults["mesh_stride"])
    decimate = _number(form, "decimate_faces", int, 100, 50_000_000, None, optional=True)
    splat_stride = _number(form, "splat_stride", int, 1, 64, defaults["splat_stride"])
    close_poles = _flag(form, "close_poles", defaults["close_poles"])
    splats = _flag(form, "splats", defaults["splats"])
    if "formats" in form:
        raw = form.getlist("formats") if hasattr(form, "getlist") else form["formats"]
        raw = [raw] if isinstance(raw, str) else list(raw)
        formats = [f.strip() for item in raw for f in str(item).split(",") if f.strip()]
    else:
        formats = list(defaults["formats"])
    bad = [f for f in formats if f not in MESH_FORMATS]
    if bad:
        raise FormError(f"formats: {bad} not among {', '.join(MESH_FORMATS)}")
    # the 3D view needs the GLB
    formats = [f for f in MESH_FORMATS if f in formats or f == "glb"]

    o = [f"predictor={predictor}", f"alignment={alignment}", f"refinement={refinement}",
         f"projection.face_size={face_size}", f"export.dense.mesh.stride={mesh_stride}",
         f"export.dense.files.formats=[{','.join(formats)}]",
         f"export.dense.mesh.close_poles={str(close_poles).lower()}",
         f"export.dense.mesh.decimate_faces={'null' if decimate is None else decimate}",
         f"export.dense.splats.enabled={str(splats).lower()}", f"export.dense.splats.stride={splat_stride}",
         f"scale.camera_height={'null' if camera_height is None else camera_height}", f"scale.method={scale_method}"]
    if predictor in ("joint", "joint_metric"):
        o += [f"predictor.midas.variant={midas}", f"predictor.depth_anything.variant={dav2}"]
    elif predictor == "midas_v31":
        o.append(f"predictor.variant={midas}")
    elif predictor == "depth_anything_v2":
        o.append(f"predictor.variant={dav2}")
    summary = {"predictor": predictor, "alignment": alignment, "refinement": refinement, "face_size": face_size,
               "scale_method": scale_method, "camera_height": camera_height, "mesh_stride": mesh_stride,
               "formats": formats, "splats": splats}
    if "midas_v31" in _MEMBERS[predictor]:
        summary["midas_variant"] = midas
    if "depth_anything_v2" in _MEMBERS[predictor]:
        summary["depth_anything_variant"] = dav2
    return JobOptions(predictor=predictor, overrides=o, splats=splats, formats=formats, summary=summary)


def network_overrides(predictor: str, allow_download: bool) -> list[str]:
    """``allow_download`` for every network the predictor builds."""
    flag = str(bool(allow_download)).lower()
    if predictor in ("joint", "joint_metric"):
        o = [f"predictor.midas.allow_download={flag}", f"predictor.depth_anything.allow_download={flag}"]
        return o + ([f"predictor.metric.allow_download={flag}"] if predictor == "joint_metric" else [])
    if predictor in NETWORKS:
        return [f"predictor.allow_download={flag}"]
    return []


def _spec(name: str, variant: str) -> WeightsSpec:
    cls = NETWORKS[name]
    v = cls.variants[variant]
    return WeightsSpec(predictor=name, variant=variant, family=cls.family, hf_id=v.hf_id,
                       upstream_file=v.upstream_file, upstream_url=v.upstream_url)


def weights_status(checkpoint_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """For every network variant: whether its weights are on this machine (no download is tried), its licence, the
    command that gets them and, when missing, the predictor's own message."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, cls in NETWORKS.items():
        out[name] = {}
        for variant, v in cls.variants.items():
            entry = {"family": cls.family, "licence": v.licence,
                     "command": f"python -m tools.download_checkpoints --predictor {name} --variant {variant}"}
            try:
                resolved = resolve_weights(_spec(name, variant), None, checkpoint_dir, False, False)
                entry.update(available=True, origin=resolved.origin)
            except WeightsNotFoundError as exc:
                entry.update(available=False, message=str(exc))
            out[name][variant] = entry
    return out


def missing_weights(options: JobOptions, status: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict]:
    """The status entries of the networks ``options`` needs that are not on this machine."""
    s = options.summary
    variant = {"midas_v31": s.get("midas_variant"), "depth_anything_v2": s.get("depth_anything_variant"),
               "depth_pro": "default"}
    needed = [(n, variant[n]) for n in _MEMBERS[options.predictor]]
    return [dict(status[n][v], predictor=n, variant=v) for n, v in needed if not status[n][v]["available"]]


def examples() -> list[dict[str, Any]]:
    """The example panoramas shipped in example_data/ (the synthetic room first: it runs without weights)."""
    out = []
    room = EXAMPLE_DIR / SYNTHETIC_EXAMPLE
    if (room / "rgb.png").is_file() and (room / "distance.npy").is_file():
        out.append({"name": SYNTHETIC_EXAMPLE, "label": "synthetic room (ground-truth-backed demo, no weights needed)",
                    "path": room / "rgb.png", "ground_truth": room / "distance.npy", "predictor": "synthetic"})
    for p in sorted(EXAMPLE_DIR.glob("*.png")):
        out.append({"name": p.stem, "label": p.stem.replace("_", " "), "path": p, "ground_truth": None,
                    "predictor": None})
    return out


def default_choices() -> dict[str, str]:
    """group -> option picked by the defaults list of configs/config.yaml (e.g. predictor -> joint)."""
    out = {}
    for entry in OmegaConf.load(PROJECT_ROOT / "configs" / "config.yaml").defaults:
        if isinstance(entry, str) or entry is None:
            continue
        for group, option in entry.items():
            if isinstance(option, str) and not group.startswith("optional"):
                out[group] = option
    return out
