"""The web app without a browser: form -> overrides, upload checks, the queue, sessions and their clean-up, and the
pipeline API it calls (the same runs as the command line)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the web app's dependencies (starlette, uvicorn, python-multipart)")
uvicorn = pytest.importorskip("uvicorn")

from modules import api  # noqa: E402
from modules.app.jobs import (  # noqa: E402
    DONE, FAILED, QUEUED, RUNNING, Job, JobFailed, JobQueue, Sessions, run_pipeline_job, stage_tracker,
)
from modules.app.options import NETWORKS, FormError, form_defaults, missing_weights, parse_form  # noqa: E402
from modules.app.server import create_app  # noqa: E402
from modules.app.settings import AppSettings, parse_args  # noqa: E402
from test_runner import run_cli  # noqa: E402



# ----------------------------------------------------------------------------------------------- form -> overrides
SYNTHETIC = {"predictor": "synthetic", "face_size": "64", "mesh_stride": "2", "formats": "ply,glb"}


@pytest.fixture(scope="module")
def defaults():
    return form_defaults(api.compose())


def test_form_defaults_are_the_configs(defaults):
    cfg = api.compose()
    assert defaults["face_size"] == cfg.projection.face_size
    assert defaults["formats"] == list(cfg.export.dense.files.formats)
    assert defaults["predictor"] == "joint"  # configs/config.yaml's defaults list
    assert defaults["depth_anything_variant"] == api.compose(["predictor=depth_anything_v2"]).predictor.variant


def test_form_becomes_overrides_that_compose(defaults):
    form = {"predictor": "joint", "midas_variant": "swin2_tiny_256", "depth_anything_variant": "small",
            "alignment": "grid", "refinement": "none", "camera_height": "1.6", "face_size": "96", "mesh_stride": "3",
            "formats": "ply,obj", "close_poles": "false", "splats": "true", "splat_stride": "4", "decimate_faces": ""}
    options = parse_form(form, defaults)
    cfg = api.compose(options.overrides)
    assert cfg.predictor.midas.variant == "swin2_tiny_256" and cfg.predictor.depth_anything.variant == "small"
    assert cfg.projection.face_size == 96 and cfg.scale.camera_height == pytest.approx(1.6)
    assert cfg.alignment._target_.endswith("GridAlignment") or "grid" in str(cfg.alignment._target_).lower()
    assert cfg.export.dense.mesh.stride == 3 and cfg.export.dense.mesh.close_poles is False
    assert list(cfg.export.dense.files.formats) == ["ply", "obj", "glb"]  # the viewer's GLB is always written
    assert cfg.export.dense.splats.enabled is True and cfg.export.dense.splats.stride == 4
    assert cfg.export.dense.mesh.decimate_faces is None


def test_joint_metric_and_depth_pro_options(defaults):
    cfg = api.compose(parse_form({"predictor": "joint_metric", "scale_method": "network",
                                  "depth_anything_variant": "small"}, defaults).overrides)
    assert cfg.scale.method == "network" and cfg.predictor.depth_anything.variant == "small"
    assert cfg.predictor.metric._target_.endswith("DepthProPredictor")
    options = parse_form({"predictor": "depth_pro"}, defaults)
    status = {n: {v: {"available": False, "family": n, "command": f"get {n} {v}"} for v in cls.variants}
              for n, cls in NETWORKS.items()}
    assert [m["command"] for m in missing_weights(options, status)] == ["get depth_pro default"]
    joint = parse_form({"predictor": "joint_metric"}, defaults)
    # the metric member is optional (scale.method=auto leaves it out without weights): only the shape networks
    assert [m["predictor"] for m in missing_weights(joint, status)] == ["midas_v31", "depth_anything_v2"]


@pytest.mark.parametrize("field, value, words", [
    ("predictor", "rm -rf", "predictor"), ("face_size", "8", "face_size: 8 is outside"),
    ("face_size", "abc", "face_size: 'abc' is not a whole number"), ("formats", "ply,stl", "formats"),
    ("camera_height", "-1", "camera_height"), ("alignment", "../x", "alignment")])
def test_form_refuses_bad_values_naming_the_field(defaults, field, value, words):
    with pytest.raises(FormError, match=words.replace("(", r"\(")):
        parse_form({field: value}, defaults)


def test_settings_bind_localhost_by_default():
    s = parse_args([])
    assert s.host == "127.0.0.1" and s.concurrency == 1
    s = parse_args(["--max-upload-mb", "5", "--session-ttl", "30", "--concurrency", "2"])
    assert s.max_upload_bytes == 5 * 2**20 and s.session_ttl_s == 30 and s.concurrency == 2


# ------------------------------------------------------------------------------------------- the pipeline API
def test_a_job_runs_what_the_cli_runs_and_follows_its_stages(defaults, tiny_scene, tmp_path):
    """The app's runner goes through api.run: the same files and distances as the command line with the same
    overrides, and the progress follows the pipeline's real stages."""
    options = parse_form({**SYNTHETIC, "face_size": "32"}, defaults)
    folder = tmp_path / "job"
    (folder / "input").mkdir(parents=True)
    job = Job(id="j", session="s", folder=folder, image_path=tiny_scene, image_name="room.png",
              overrides=options.overrides, options=options.summary)
    seen: list[tuple[str, float]] = []
    run_pipeline_job(job, lambda stage, fraction: seen.append((stage, fraction)))
    stages = [s for s, _ in seen]
    # the default config has no refinement (refinement=none), so the tracker skips that stage
    assert stages == ["projection", "network", "alignment", "blending", "scale", "export", "packing"]
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0 and 0.9 < fractions[-1] < 1
    assert job.meta["dense"]["files"]["mesh_glb"] == "mesh.glb" and job.zip_path.is_file()

    proc = run_cli(["mode=render_dense", f"dataset.image_path={tiny_scene}", f"hydra.run.dir={tmp_path / 'cli'}",
                    *options.overrides], tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(job.out_dir / "distance.npy"), np.load(tmp_path / "cli" / "distance.npy"))
    cli_files = sorted(p.name for p in (tmp_path / "cli").iterdir()
                       if not p.name.startswith(".") and p.suffix != ".log")
    assert sorted(p.name for p in job.out_dir.iterdir()) == cli_files
    assert sorted(zipfile.ZipFile(job.zip_path).namelist()) == cli_files


def test_stage_tracker_skips_refinement_when_it_is_off():
    seen = []
    job = Job(id="j", session="s", folder=Path("."), image_path=Path("p.png"), image_name="p", overrides=[],
              options={"refinement": "none"})
    track = stage_tracker(job, lambda stage, fraction: seen.append(stage))
    for stage in ("projection", "network", "blending", "scale", "done"):
        track(stage, 0.5)
    assert seen == ["network", "alignment", "scale", "export", "packing"]


def test_a_failed_run_fails_the_job_with_its_message(defaults, tmp_path):
    bad = tmp_path / "bad.png"
    Image.new("RGB", (100, 80)).save(bad)
    options = parse_form(SYNTHETIC, defaults)
    job = Job(id="j", session="s", folder=tmp_path / "job", image_path=bad, image_name="bad.png",
              overrides=options.overrides, options=options.summary)
    with pytest.raises(JobFailed, match="twice as wide as high"):
        run_pipeline_job(job, lambda stage, fraction: None)


# --------------------------------------------------------------------------------------------- queue, sessions
class Gate:
    """A runner that blocks each job until released, recording the order jobs ran in (or fails on request)."""

    def __init__(self):
        self.release: dict[str, threading.Event] = {}
        self.order: list[str] = []

    def __call__(self, job, progress):
        self.order.append(job.id)
        progress("network", 0.3)
        self.release.setdefault(job.id, threading.Event()).wait(10)
        if job.options.get("fail"):
            raise RuntimeError("boom")
        job.out_dir.mkdir(parents=True, exist_ok=True)
        (job.out_dir / "distance.npy").write_bytes(b"x")


def _job(tmp_path, name, **options):
    folder = tmp_path / name
    (folder / "input").mkdir(parents=True)
    return Job(id=name, session="s", folder=folder, image_path=folder / "input" / "p.png", image_name="p.png",
               overrides=[], options=options)


def wait_for(predicate, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_queue_runs_one_job_at_a_time_in_order_and_survives_failures(tmp_path):
    gate = Gate()
    queue = JobQueue(gate, concurrency=1, max_queue=3)
    try:
        a, b, c = _job(tmp_path, "a", fail=True), _job(tmp_path, "b"), _job(tmp_path, "c")
        for j in (a, b, c):
            gate.release[j.id] = threading.Event()
            queue.submit(j)
        wait_for(lambda: a.state == RUNNING)
        assert (b.state, c.state) == (QUEUED, QUEUED)
        assert (queue.position(b), queue.position(c)) == (1, 2)
        assert a.stage == "network" and a.fraction == pytest.approx(0.3)
        with pytest.raises(Exception, match="3 jobs"):
            queue.submit(_job(tmp_path, "d"))
        gate.release["a"].set()
        wait_for(lambda: b.state == RUNNING)
        assert a.state == FAILED and "boom" in a.error and c.state == QUEUED and queue.position(c) == 1
        gate.release["b"].set()
        gate.release["c"].set()
        wait_for(lambda: c.state == DONE)
        assert gate.order == ["a", "b", "c"] and b.state == DONE and b.fraction == 1.0
    finally:
        queue.stop()


def test_sessions_are_cleaned_after_their_ttl_but_not_while_a_job_is_active(tmp_path):
    sessions = Sessions(tmp_path / "sessions", ttl_s=60)
    sessions.touch("idle")
    sessions.touch("busy")
    _, idle_folder = sessions.new_job_folder("idle")
    job_id, busy_folder = sessions.new_job_folder("busy")
    sessions.add(Job(id=job_id, session="busy", folder=busy_folder, image_path=busy_folder / "p.png",
                     image_name="p", overrides=[], state=RUNNING))
    assert sessions.cleanup(now=time.time() + 30) == []
    assert sessions.cleanup(now=time.time() + 61) == ["idle"]
    assert not idle_folder.exists() and busy_folder.exists() and not sessions.known("idle")
    sessions.job("busy", job_id).state = DONE
    assert sessions.cleanup(now=time.time() + 61) == ["busy"] and not busy_folder.exists()


# --------------------------------------------------------------------------------------------------- the server
class Client:
    """HTTP client with its own cookie jar (one browser session)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def get(self, path: str):
        try:
            with self.opener.open(self.base + path, timeout=30) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def json(self, path: str):
        status, body, _ = self.get(path)
        return status, json.loads(body)

    def post(self, fields: dict[str, str], files: dict[str, tuple[str, bytes]]):
        boundary = uuid.uuid4().hex
        out = io.BytesIO()
        for k, v in fields.items():
            out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
        for k, (name, data) in files.items():
            out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\n"
                      f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
        req = urllib.request.Request(self.base + "/api/jobs", data=out.getvalue(), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with self.opener.open(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


class Served:
    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20)
        self.base = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def serve():
    started = []

    def start(settings, runner=None):
        app = create_app(settings, runner) if runner is not None else create_app(settings)
        started.append(Served(app))
        return started[-1]

    yield start
    for s in started:
        s.close()


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()




def test_bad_uploads_get_clear_messages_and_the_server_keeps_serving(serve, tiny_scene, tmp_path):
    s = serve(AppSettings(work_dir=tmp_path / "w", max_megapixels=0.02))
    c = Client(s.base)
    cases = [
        ({"panorama": ("broken.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 50)}, "broken.png: cannot be read as an image"),
        ({"panorama": ("empty.jpg", b"")}, "empty.jpg: the file is empty"),
        ({"panorama": ("square.png", png_bytes(64, 64))}, "square.png: is 64x64 pixels; an equirectangular panorama "
                                                          "must be exactly twice as wide as high"),
        ({"panorama": ("huge.png", png_bytes(256, 128))}, "huge.png: is 256x128 pixels (0.0 megapixels); this server "
                                                          "accepts at most 0.02 megapixels"),
        ({"panorama": ("room.png", tiny_scene.read_bytes())},
         "the synthetic predictor needs the scene's true distances"),
        ({"panorama": ("room.png", tiny_scene.read_bytes()), "ground_truth": ("d.npy", b"not npy")},
         "d.npy: not a readable .npy file"),
        ({}, "choose a panorama file to upload or pick an example"),
    ]
    for files, message in cases:
        status, body = c.post(SYNTHETIC, files)
        assert status == 400 and message in body["error"], (message, body)
    status, body = c.post({**SYNTHETIC, "face_size": "1"}, {"panorama": ("room.png", tiny_scene.read_bytes())})
    assert status == 400 and "face_size: 1 is outside" in body["error"]
    # nothing was queued, no folder left behind, and the server still answers
    assert c.json("/api/jobs") == (200, {"jobs": []})
    assert not any(p.is_file() for p in (tmp_path / "w" / "sessions").rglob("*"))
    assert c.get("/")[0] == 200


def test_uploads_over_the_size_limit_are_refused_before_reading(serve, tmp_path):
    s = serve(AppSettings(work_dir=tmp_path / "w", max_upload_mb=0.01))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(50 * 2**20))
    conn.endheaders()  # the body is never sent
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 413 and "50.0 MB; this server accepts at most 0.01 MB" in body["error"]
    conn.close()
    assert Client(s.base).get("/api/info")[0] == 200


def test_missing_weights_are_named_with_the_command_and_the_demo_still_runs(serve, tiny_scene, tmp_path):
    s = serve(AppSettings(work_dir=tmp_path / "w"))
    c = Client(s.base)
    status, info = c.json("/api/info")
    assert status == 200 and info["examples"][0]["name"] == "synthetic_room"
    entry = info["weights"]["depth_anything_v2"]["small"]
    assert entry["command"] == "python -m tools.download_checkpoints --predictor depth_anything_v2 --variant small"
    if entry["available"]:
        pytest.skip("Depth Anything V2 small weights are on this machine")
    status, body = c.post({**SYNTHETIC, "predictor": "depth_anything_v2", "depth_anything_variant": "small"},
                          {"panorama": ("room.png", tiny_scene.read_bytes())})
    assert status == 400
    assert "python -m tools.download_checkpoints --predictor depth_anything_v2 --variant small" in body["error"]
    assert "synthetic room example runs without weights" in body["error"]


def test_jobs_run_queued_per_session_with_files_and_zip(serve, tiny_scene, tmp_path):
    gate = Gate()
    s = serve(AppSettings(work_dir=tmp_path / "w", session_ttl_s=3600), runner=gate)
    alice, bob = Client(s.base), Client(s.base)
    files = {"panorama": ("room.png", tiny_scene.read_bytes()),
             "ground_truth": ("distance.npy", tiny_scene.with_name("distance.npy").read_bytes())}
    status, first = alice.post(SYNTHETIC, files)
    assert status == 202 and first["job"]["ground_truth_backed"] and "ground-truth-backed" in first["job"]["label"]
    wait_for(lambda: alice.json(f"/api/jobs/{first['job']['id']}")[1]["state"] == "running")
    status, second = bob.post(SYNTHETIC, files)
    assert status == 202 and second["job"]["state"] == "queued" and second["job"]["position"] == 1
    # sessions see only their own jobs
    assert [j["id"] for j in bob.json("/api/jobs")[1]["jobs"]] == [second["job"]["id"]]
    assert bob.json(f"/api/jobs/{first['job']['id']}")[0] == 404
    gate.release[first["job"]["id"]].set()
    wait_for(lambda: second["job"]["id"] in gate.release)
    gate.release[second["job"]["id"]].set()
    wait_for(lambda: bob.json(f"/api/jobs/{second['job']['id']}")[1]["state"] == "done")
    job = alice.json(f"/api/jobs/{first['job']['id']}")[1]
    assert job["state"] == "done" and [f["name"] for f in job["files"]] == ["distance.npy"]
    assert alice.get(job["files"][0]["url"])[1] == b"x"
    assert alice.get(f"/api/jobs/{job['id']}/files/..%2Finput%2Fdistance.npy")[0] == 404


def test_a_real_job_end_to_end(serve, tiny_scene, tmp_path):
    """The synthetic room through the real pipeline: views, every output file, the zip of all."""
    s = serve(AppSettings(work_dir=tmp_path / "w"))
    c = Client(s.base)
    status, body = c.post({**SYNTHETIC, "splats": "true", "splat_stride": "4"},
                          {"panorama": ("room.png", tiny_scene.read_bytes()),
                           "ground_truth": ("distance.npy", tiny_scene.with_name("distance.npy").read_bytes())})
    assert status == 202, body
    jid = body["job"]["id"]
    wait_for(lambda: c.json(f"/api/jobs/{jid}")[1]["state"] in ("done", "failed"), 120)
    job = c.json(f"/api/jobs/{jid}")[1]
    assert job["state"] == "done", job["error"]
    names = {f["name"] for f in job["files"]}
    assert {"distance.npy", "distance.png", "distance_preview.png", "confidence.npy", "mesh.glb", "mesh.ply",
            "splats.ply", "meta.json"} <= names
    assert job["viewer"]["glb"].endswith("mesh.glb") and job["viewer"]["splats"].endswith("splats.ply")
    status, data, headers = c.get(job["zip_url"])
    assert status == 200 and set(zipfile.ZipFile(io.BytesIO(data)).namelist()) == names
    for view in ("panorama", "distance", "confidence"):
        status, data, headers = c.get(job["views"][view])
        assert status == 200 and Image.open(io.BytesIO(data)).size == (128, 64)
    meta = json.loads(c.get(f"/api/jobs/{jid}/files/meta.json")[1])
    assert meta["config"]["predictor"]["_target_"].endswith("SyntheticPredictor")
    assert meta["config"]["projection"]["face_size"] == 64
