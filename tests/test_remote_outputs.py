"""batch.output_dir at a URI fsspec understands (memory:// here; s3:// and gs:// go through the same calls) and
file:// URIs (plain local paths): the same files as a local folder, the marker uploaded last, resume from the URI."""

from __future__ import annotations

import json
import uuid

import pytest

from test_batch import make_folder, run_batch, statuses

fsspec = pytest.importorskip("fsspec")

FILES = ("distance.npy", "confidence.npy", "distance.png", "meta.json")


def test_outputs_at_an_fsspec_uri_match_a_local_folder_and_resume_from_it(tmp_path):
    tour = make_folder(tmp_path / "in", good=2, broken=True)
    code_local, local = run_batch(tour, tmp_path / "local")
    uri = f"memory://immersivedepth-{uuid.uuid4().hex}/out"
    code, summary = run_batch(tour, tmp_path / "run", f"batch.output_dir={uri}")
    assert code == code_local == 1 and statuses(summary) == statuses(local)
    # summary.json next to the outputs (read from the URI by run_batch) and in the run folder; nothing else there
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert not (tmp_path / "run" / "scene0-rgb").exists()
    fs, root = fsspec.core.url_to_fs(uri)
    ok = sorted(p["name"] for p in summary["panoramas"] if p["status"] == "ok")
    assert ok == ["scene0-rgb", "scene1-rgb"]
    assert sorted(fs.ls(root, detail=False)) == sorted([f"{root}/{name}" for name in ok] + [f"{root}/summary.json"])
    for name in ok:
        for f in FILES[:3]:
            assert fs.cat_file(f"{root}/{name}/{f}") == (tmp_path / "local" / name / f).read_bytes()
        meta = json.loads(fs.cat_file(f"{root}/{name}/meta.json"))
        assert meta["complete"] is True and set(FILES) <= set(meta["outputs"]) | {"meta.json"}
        # the marker was uploaded after every other file of the panorama
        created = {p: fs.info(p)["created"] for p in fs.ls(f"{root}/{name}", detail=False)}
        assert max(created, key=created.get).endswith("/meta.json")
    # resume reads the markers at the URI; a panorama without its marker (an upload cut short) runs again
    fs.rm_file(f"{root}/scene1-rgb/meta.json")
    code, again = run_batch(tour, tmp_path / "run2", f"batch.output_dir={uri}", "batch.skip_existing=true")
    assert statuses(again)["scene0-rgb"] == "skipped" and statuses(again)["scene1-rgb"] == "ok"
    assert json.loads(fs.cat_file(f"{root}/scene1-rgb/meta.json"))["complete"] is True
    fs.rm(root.rpartition("/")[0], recursive=True)


def test_file_uri_is_a_local_path(tmp_path):
    tour = make_folder(tmp_path / "in", good=1, broken=False)
    code, summary = run_batch(tour / "scene0" / "rgb.png", tmp_path / "run", f"batch.output_dir=file://{tmp_path}/out")
    assert code == 0 and summary["panoramas"][0]["output_dir"] == str(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["complete"] is True


def test_an_unknown_protocol_is_a_user_error(tmp_path):
    from modules.errors import UserError

    tour = make_folder(tmp_path / "in", good=1, broken=False)
    with pytest.raises(UserError, match="nosuchfs://bucket/out"):
        run_batch(tour, tmp_path / "run", "batch.output_dir=nosuchfs://bucket/out")
