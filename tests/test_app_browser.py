"""The web app in a real browser (Debian's chromium, driven by playwright) against ``python -m modules.app`` on
127.0.0.1: a corrupt upload gets its message, the synthetic room runs, a second upload made while the first runs is
queued and then done, the 3D view renders non-blank pixels, the GLB downloads and parses.

Set IMMERSIVEDEPTH_APP_SCREENSHOT=path to keep the page's screenshot (docs/images/app.png comes from this test).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.config import PROJECT_ROOT
from modules.dataset.synthetic_scene import make_room, render_erp

CHROMIUM = os.environ.get("IMMERSIVEDEPTH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]

pytestmark = pytest.mark.slow


def _require_browser():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package (requirements-dev.txt)")
    pytest.importorskip("uvicorn", reason="the web app's dependencies (starlette, uvicorn, python-multipart)")


@pytest.fixture(scope="module")
def small_room(tmp_path_factory) -> Path:
    """The synthetic room of example_data (seed 0, the same generator) rendered small: 256x128 + distance.npy."""
    folder = tmp_path_factory.mktemp("room")
    rgb, distance = render_erp(make_room(0), 128)
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "synthetic_room.png")
    np.save(folder / "distance.npy", distance)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return folder


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``python -m modules.app`` on a free port of 127.0.0.1, stopped (by its own pid) after the module."""
    _require_browser()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path_factory.mktemp("appwork")
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "modules.app", "--port", str(port), "--work-dir", str(work / "w"),
                             "--num-threads", "1"], cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "api/info", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the app did not start:\n{(work / 'server.log').read_text()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def canvas_variance(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32).std())


def test_browser_upload_queue_view_download(app_url, small_room, tmp_path):
    from playwright.sync_api import sync_playwright

    external: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            # the page's own files, data: URLs and blob: URLs of its own origin (GLTFLoader decodes textures so)
            local = (app_url, "data:", "blob:" + app_url.rstrip("/"))
            page.on("request", lambda r: None if r.url.startswith(local) else external.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(app_url)
            page.wait_for_function("window.appReady === true", timeout=30000)

            # missing weights of the default predictor: named on the page with the command, the demo offered
            info = page.evaluate("fetch('/api/info').then(r => r.json())")
            d = info["defaults"]
            missing = [info["weights"][p][v] for p, v in (("midas_v31", d["midas_variant"]),
                                                           ("depth_anything_v2", d["depth_anything_variant"]))
                       if not info["weights"][p][v]["available"]]
            assert page.is_visible("#weights-banner") == bool(missing)
            if missing:
                banner = page.inner_text("#weights-banner")
                assert all(w["command"] in banner for w in missing) and "synthetic room demo" in banner
                page.click("#try-demo")
                assert page.input_value("#predictor") == "synthetic"
                assert page.input_value("#example") == "synthetic_room"
                assert "ground-truth-backed" in page.inner_text("#demo-note")
                page.select_option("#example", "")

            # a corrupt file: a message on the page, nothing queued
            page.set_input_files("#panorama", str(small_room / "corrupt.png"))
            page.click("#run")
            page.wait_for_selector("#error:not([hidden])", timeout=30000)
            assert "corrupt.png: cannot be read as an image" in page.inner_text("#error")
            assert page.query_selector_all("#jobs li") == []

            # the synthetic room, then a second upload while the first runs
            page.select_option("#predictor", "synthetic")
            page.fill("#face_size", "64")
            page.set_input_files("#ground_truth", str(small_room / "distance.npy"))
            page.set_input_files("#panorama", str(small_room / "synthetic_room.png"))
            page.click("#run")
            page.wait_for_function("document.querySelectorAll('#jobs li').length === 1", timeout=30000)
            assert page.inner_text("#error") == ""
            page.check("#splats")
            page.fill("#splat_stride", "2")
            page.set_input_files("#panorama", str(small_room / "synthetic_room.png"))
            page.click("#run")
            page.wait_for_function("document.querySelectorAll('#jobs li').length === 2", timeout=30000)
            first, second = page.query_selector_all("#jobs li")
            assert first.get_attribute("data-state") in ("queued", "running")
            assert second.get_attribute("data-state") == "queued" and "1 job(s) ahead" in second.inner_text()
            first_id, second_id = first.get_attribute("data-job"), second.get_attribute("data-job")

            page.wait_for_function(
                "[...document.querySelectorAll('#jobs li')].every(l => l.dataset.state === 'done' || "
                "l.dataset.state === 'failed')", timeout=180000)
            states = [li.get_attribute("data-state") for li in page.query_selector_all("#jobs li")]
            assert states == ["done", "done"], [li.inner_text() for li in page.query_selector_all("#jobs li")]

            # the first job's result: 3D view from the capture point, images, downloads
            page.click("#jobs li:first-child")
            page.wait_for_function("id => window.viewerState && window.viewerState.loaded && window.viewerState.mode "
                                   "=== 'mesh' && window.viewerState.url.includes(id)", arg=first_id,
                                   timeout=60000)
            state = page.evaluate("window.viewerState")
            assert state["triangles"] > 1000 and state["error"] is None
            assert "ground-truth-backed" in page.inner_text("#result-label")
            page.wait_for_function("['img-panorama', 'img-distance', 'img-confidence'].every("
                                   "id => document.getElementById(id).complete && "
                                   "document.getElementById(id).naturalWidth === 256)", timeout=30000)
            time.sleep(0.3)
            shot = page.locator("#viewer canvas").screenshot()
            assert canvas_variance(shot) > 5.0, "the 3D view is blank"
            readback = page.evaluate("document.querySelector('#viewer canvas').toDataURL('image/png')")
            import base64

            assert canvas_variance(base64.b64decode(readback.split(",", 1)[1])) > 5.0
            page.click("#view-outside")
            page.evaluate("window.scrollTo(0, 0)")
            time.sleep(0.3)
            assert canvas_variance(page.locator("#viewer canvas").screenshot()) > 5.0
            screenshot = page.screenshot(full_page=False)
            target = os.environ.get("IMMERSIVEDEPTH_APP_SCREENSHOT")
            if target:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                Path(target).write_bytes(screenshot)

            with page.expect_download() as dl:
                page.click("#downloads a[download='mesh.glb']")
            glb = tmp_path / "mesh.glb"
            dl.value.save_as(glb)
            from pygltflib import GLTF2

            gltf = GLTF2().load(str(glb))
            positions = gltf.accessors[gltf.meshes[0].primitives[0].attributes.POSITION]
            assert positions.count == state["vertices"] and positions.count > 500

            with page.expect_download() as dl:
                page.click("#download-zip")
            import zipfile

            dl.value.save_as(tmp_path / "all.zip")
            assert {"mesh.glb", "distance.npy", "confidence.npy", "meta.json"} <= set(
                zipfile.ZipFile(tmp_path / "all.zip").namelist())

            # the second job (queued, not lost) has its splats; the splat view renders
            page.click("#jobs li:nth-child(2)")
            page.wait_for_function("id => window.viewerState.url && window.viewerState.url.includes(id) && "
                                   "!document.getElementById('show-splats').disabled",
                                   arg=second_id, timeout=60000)
            page.click("#show-splats")
            page.wait_for_function("window.viewerState.loaded && window.viewerState.mode === 'splats'", timeout=60000)
            assert page.evaluate("window.viewerState.points") == 128 * 256 // 4
            time.sleep(0.3)
            assert canvas_variance(page.locator("#viewer canvas").screenshot()) > 5.0
        finally:
            browser.close()
    assert errors == []
    assert external == [], f"the page fetched from outside 127.0.0.1: {external}"
