"""Routes of the web app (Starlette, served by uvicorn).

    GET  /                          the page (static/index.html; three.js is served from static/vendor)
    GET  /api/info                  form choices and defaults, weights on this machine, examples, limits
    POST /api/jobs                  multipart: panorama file or example name, optional ground truth, options
    GET  /api/jobs                  this session's jobs
    GET  /api/jobs/{id}             one job: state, queue position, stage, progress, files
    GET  /api/jobs/{id}/files/{f}   one output file
    GET  /api/jobs/{id}/zip         all output files in one zip
    GET  /api/jobs/{id}/view/{v}    panorama | distance | confidence as a PNG for the page

Errors are JSON ``{"error": message}`` with a 4xx/5xx status; the page shows the message. A session is a cookie; a
session sees only its own jobs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import UserError
from .jobs import STAGE_LABELS, Job, JobQueue, QueueFull, Sessions, run_pipeline_job
from .options import (
    ALIGNMENTS, MESH_FORMATS, NETWORKS, PREDICTORS, REFINEMENTS, SCALE_METHODS, SYNTHETIC_LABEL, FormError, examples,
    form_defaults, missing_weights, network_overrides, parse_form, weights_status,
)
from .settings import AppSettings, parse_args
from .uploads import IMAGE_SUFFIXES, UploadError, check_ground_truth, check_panorama, safe_name

__all__ = ["create_app", "main", "COOKIE"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "immersivedepth_session"
VIEW_MAX_WIDTH = 2048


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class AppState:
    """Everything the routes share: settings, config defaults, sessions, the job queue."""

    def __init__(self, settings: AppSettings, runner=run_pipeline_job):
        from ..api import compose

        self.settings = settings
        self._own_work_dir = settings.work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="immersivedepth-app-")) if self._own_work_dir \
            else Path(settings.work_dir)
        self.cfg = compose()
        self.defaults = form_defaults(self.cfg)
        self.min_height = int(self.cfg.dataset.min_height)
        self.checkpoint_dir = str(self.cfg.paths.checkpoint_dir)
        self.examples = {e["name"]: e for e in examples()}
        self.sessions = Sessions(self.work_dir / "sessions", settings.session_ttl_s)
        self.queue = JobQueue(runner, settings.concurrency, settings.max_queue)
        self._stop = threading.Event()
        self._cleaner = threading.Thread(target=self._clean_loop, name="immersivedepth-cleanup", daemon=True)
        self._cleaner.start()

    def _clean_loop(self) -> None:
        while not self._stop.wait(self.settings.cleanup_interval_s):
            try:
                self.sessions.cleanup()
            except Exception:  # never let the clean-up thread die
                log.exception("session clean-up failed")

    def close(self) -> None:
        self._stop.set()
        self.queue.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def server_overrides(self, predictor: str) -> list[str]:
        o = [f"runtime.device={self.settings.device}"]
        if self.settings.num_threads:
            o.append(f"runtime.num_threads={int(self.settings.num_threads)}")
        return o + network_overrides(predictor, self.settings.allow_download)


def job_status(state: AppState, job: Job) -> dict[str, Any]:
    base = f"/api/jobs/{job.id}"
    files = [{"name": p.name, "size": p.stat().st_size, "url": f"{base}/files/{p.name}"} for p in job.output_files()]
    names = {f["name"] for f in files}
    out = {
        "id": job.id, "state": job.state, "stage": job.stage, "stage_label": STAGE_LABELS.get(job.stage, job.stage),
        "fraction": round(job.fraction, 4), "position": state.queue.position(job), "error": job.error,
        "image_name": job.image_name, "options": job.options, "ground_truth_backed": job.ground_truth,
        "created": job.created, "started": job.started, "finished": job.finished,
        "files": files, "zip_url": f"{base}/zip" if job.zip_path.is_file() else None,
        "views": {"panorama": f"{base}/view/panorama"},
    }
    if job.ground_truth:
        out["label"] = SYNTHETIC_LABEL
    if "distance_preview.png" in names:
        out["views"]["distance"] = f"{base}/view/distance"
    if "confidence.npy" in names:
        out["views"]["confidence"] = f"{base}/view/confidence"
    if "mesh.glb" in names:
        dense = state.cfg.export.dense
        out["viewer"] = {"glb": f"{base}/files/mesh.glb",
                         "splats": f"{base}/files/splats.ply" if "splats.ply" in names else None,
                         "splat_axes": str(dense.splats.axes)}
    if job.meta:
        out["timings"] = job.meta.get("timings")
        out["scale"] = job.meta.get("scale")
    return out


def _session(request: Request) -> str:
    return request.state.session


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def info(request: Request) -> Response:
    state: AppState = request.app.state.app
    s = state.settings
    weights = await run_in_threadpool(weights_status, state.checkpoint_dir)
    return JSONResponse({
        "defaults": state.defaults,
        "choices": {
            "predictor": list(PREDICTORS),
            "midas_variant": list(NETWORKS["midas_v31"].variants),
            "depth_anything_variant": list(NETWORKS["depth_anything_v2"].variants),
            "depth_pro_variant": list(NETWORKS["depth_pro"].variants),
            "scale_method": list(SCALE_METHODS),
            "alignment": list(ALIGNMENTS),
            "refinement": list(REFINEMENTS),
            "formats": list(MESH_FORMATS),
        },
        "weights": weights,
        "allow_download": s.allow_download,
        "examples": [{"name": e["name"], "label": e["label"], "predictor": e["predictor"]}
                     for e in state.examples.values()],
        "limits": {"max_upload_mb": s.max_upload_mb, "max_megapixels": s.max_megapixels,
                   "session_ttl_s": s.session_ttl_s, "concurrency": s.concurrency, "max_queue": s.max_queue},
        "synthetic_label": SYNTHETIC_LABEL,
    })


async def _save_upload(upload, target: Path, limit: int) -> int:
    """Copy an uploaded file to ``target``; returns its size."""
    size = 0
    with open(target, "wb") as f:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise UploadError(f"{upload.filename}: larger than {limit / 2**20:g} MB (--max-upload-mb)")
            f.write(chunk)
    return size


async def submit(request: Request) -> Response:
    state: AppState = request.app.state.app
    s = state.settings
    length = request.headers.get("content-length")
    if length is None:
        return _error("uploads need a Content-Length", 411)
    if int(length) > s.max_upload_bytes:
        return JSONResponse(
            {"error": f"the upload is {int(length) / 2**20:.1f} MB; this server accepts at most "
                      f"{s.max_upload_mb:g} MB (--max-upload-mb)"},
            status_code=413, headers={"Connection": "close"})
    try:
        form = await request.form(max_files=2, max_fields=64)
    except Exception as exc:  # malformed multipart bodies
        return _error(f"the form could not be read ({exc})")
    session = _session(request)
    folder: Path | None = None
    try:
        options = parse_form(form, state.defaults)
        upload, example = form.get("panorama"), str(form.get("example") or "")
        has_upload = upload is not None and not isinstance(upload, str) and bool(upload.filename)
        if not has_upload and not example:
            raise UploadError("choose a panorama file to upload or pick an example")
        job_id, folder = state.sessions.new_job_folder(session)
        gt_upload = form.get("ground_truth")
        has_gt = gt_upload is not None and not isinstance(gt_upload, str) and bool(gt_upload.filename)
        if has_upload:
            shown = safe_name(upload.filename, "panorama")
            suffix = Path(shown).suffix.lower()
            image_path = folder / "input" / ("panorama" + (suffix if suffix in IMAGE_SUFFIXES else ".img"))
            await _save_upload(upload, image_path, s.max_upload_bytes)
            gt_path = folder / "input" / "distance.npy" if has_gt else None
        else:
            if example not in state.examples:
                raise UploadError(f"unknown example {example!r}")
            e = state.examples[example]
            shown, image_path = f"{example} ({Path(e['path']).name})", Path(e["path"])
            gt_path = Path(e["ground_truth"]) if e["ground_truth"] and not has_gt else None
            if has_gt:
                # the synthetic predictor reads distance.npy beside the image: give the example a folder of its own
                local = folder / "input" / ("panorama" + image_path.suffix)
                shutil.copyfile(image_path, local)
                image_path, gt_path = local, folder / "input" / "distance.npy"
        if has_gt:
            await _save_upload(gt_upload, folder / "input" / "distance.npy", s.max_upload_bytes)
        size = await run_in_threadpool(check_panorama, image_path, shown, s.max_megapixels, state.min_height)
        if options.synthetic:
            if gt_path is None:
                raise UploadError(
                    "the synthetic predictor needs the scene's true distances: upload its distance map (.npy, float "
                    "[H, W], the panorama's size) with the panorama, or pick the synthetic room example")
            await run_in_threadpool(check_ground_truth, gt_path, safe_name(getattr(gt_upload, "filename", None),
                                                                           gt_path.name), size)
        elif not s.allow_download:
            missing = await run_in_threadpool(missing_weights, options, await run_in_threadpool(
                weights_status, state.checkpoint_dir))
            if missing:
                raise UploadError(" ".join(
                    f"{m['family']} weights ({m['variant']}) are not on this machine; get them with: {m['command']}"
                    for m in missing) + ". The synthetic room example runs without weights.")
        job = Job(id=job_id, session=session, folder=folder, image_path=image_path, image_name=shown,
                  overrides=options.overrides + state.server_overrides(options.predictor),
                  options=options.summary, ground_truth=options.synthetic)
        state.sessions.add(job)
        state.queue.submit(job)
    except (UserError, FormError) as exc:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return _error(str(exc))
    except QueueFull as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _error(str(exc), 503)
    return JSONResponse({"job": job_status(state, job)}, status_code=202)


async def list_jobs(request: Request) -> Response:
    state: AppState = request.app.state.app
    return JSONResponse({"jobs": [job_status(state, j) for j in state.sessions.jobs(_session(request))]})


def _job(request: Request) -> Job | None:
    state: AppState = request.app.state.app
    return state.sessions.job(_session(request), request.path_params["job_id"])


async def get_job(request: Request) -> Response:
    job = _job(request)
    if job is None:
        return _error("no such job in this session (finished jobs are deleted after the session expires)", 404)
    return JSONResponse(job_status(request.app.state.app, job))


async def get_file(request: Request) -> Response:
    job = _job(request)
    name = request.path_params["name"]
    if job is None:
        return _error("no such job in this session", 404)
    files = {p.name: p for p in job.output_files()}
    if name not in files:
        return _error(f"{name}: no such output file", 404)
    return FileResponse(files[name], filename=name)


async def get_zip(request: Request) -> Response:
    job = _job(request)
    if job is None or not job.zip_path.is_file():
        return _error("no zip for this job (yet)", 404)
    return FileResponse(job.zip_path, filename=job.zip_path.name, media_type="application/zip")


def _view_png(job: Job, kind: str) -> Path:
    """PNG for the page: the input panorama, the distance preview or the confidence map (grey, 1 = white)."""
    views = job.folder / "view"
    views.mkdir(exist_ok=True)
    target = views / f"{kind}.png"
    if target.is_file():
        return target
    if kind == "panorama":
        with Image.open(job.image_path) as im:
            im = im.convert("RGB")
            if im.width > VIEW_MAX_WIDTH:
                im = im.resize((VIEW_MAX_WIDTH, VIEW_MAX_WIDTH // 2), Image.Resampling.BILINEAR)
            im.save(target.with_suffix(".part.png"))
    elif kind == "distance":
        shutil.copyfile(job.out_dir / "distance_preview.png", target.with_suffix(".part.png"))
    else:
        conf = np.nan_to_num(np.load(job.out_dir / "confidence.npy"), nan=0.0).clip(0, 1)
        Image.fromarray((conf * 255 + 0.5).astype(np.uint8)).save(target.with_suffix(".part.png"))
    target.with_suffix(".part.png").replace(target)
    return target


async def get_view(request: Request) -> Response:
    job = _job(request)
    kind = request.path_params["kind"]
    if job is None or kind not in ("panorama", "distance", "confidence"):
        return _error("no such view", 404)
    if kind != "panorama" and job.state != "done":
        return _error(f"{kind}: the job has not finished", 404)
    path = await run_in_threadpool(_view_png, job, kind)
    return FileResponse(path, media_type="image/png")


class SessionMiddleware:
    """Give every browser a session cookie and mark the session as seen (for the clean-up)."""

    def __init__(self, app, state_getter):
        self.app = app
        self.state_getter = state_getter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        state: AppState = self.state_getter()
        session = request.cookies.get(COOKIE)
        new = not state.sessions.known(session)
        if new:
            session = state.sessions.new_id()
        state.sessions.touch(session)
        scope.setdefault("state", {})["session"] = session

        async def send_with_cookie(message):
            if new and message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(settings: AppSettings | None = None, runner=run_pipeline_job) -> Starlette:
    """The ASGI app. ``runner`` runs one job (default: the pipeline API; tests may pass a controllable one)."""
    settings = settings or AppSettings()
    holder: dict[str, AppState] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if "state" in holder:
            holder["state"].close()

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}/files/{name}", get_file),
        Route("/api/jobs/{job_id}/zip", get_zip),
        Route("/api/jobs/{job_id}/view/{kind}", get_view),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    holder["state"] = AppState(settings, runner)
    app.state.app = holder["state"]
    app.add_middleware(SessionMiddleware, state_getter=lambda: holder["state"])
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    app = create_app(settings)
    url = f"http://{settings.host}:{settings.port}/"
    log.info("ImmersiveDepth app on %s (work folder %s)", url, app.state.app.work_dir)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        app.state.app.close()
    return 0
