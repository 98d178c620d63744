"""Every command of README's "Modes" section runs as written (issue #13): the commands are parsed out of README, so
this test breaks when README drifts (a file that does not exist, a key that is gone, a mode that fails).

What the test changes, and why (README says so too):
* it runs in a temporary folder holding a small copy of the samples README names (``example_data/synthetic_room``
  rendered at 128x64 and ``example_data/synthetic_photo`` at 64x48 by the same tool and seeds; the names are
  checked to exist in the real example_data/), so that the whole section takes seconds, not minutes;
* ``predictor=synthetic`` (reads the exact distances beside each sample) where a line runs the networks, whose weights
  are not on test machines; for a video, with the walk's per-frame distances;
* ``projection.face_size=64`` on every run, and the tools' ``--height 64`` / ``--frames 8`` (argparse keeps the last);
* not run, each for its reason (the test fails on any other line it cannot run): ``runtime=ray`` (Ray's start-up
  alone is ~25 s here; tests/test_ray_batch.py covers it), the 16384x8192 ``pano_16k.png`` of the memory example
  (hundreds of MB, 8 GB to process; tests/test_size_guard.py covers the refusal and the fit), and the memory
  benchmark ``tools/bench_memory.py`` (minutes).
Runs go in-process (as tests/test_runner.run_cli does); a multirun line (``-m``) as a real subprocess; one torch
thread (tiny runs on a shared 2-core machine are fastest so).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.config import PROJECT_ROOT
from test_runner import run_cli

pytestmark = pytest.mark.slow  # ~15 runs of the command line (about a minute on the shared 2-core VM)

README = PROJECT_ROOT / "README.md"
TINY = ["projection.face_size=64"]


def modes_commands() -> list[list[str]]:
    """argv of every command in the ```bash blocks of README's "## Modes" section (continuations joined)."""
    text = README.read_text()
    start = text.index("\n## Modes\n")
    section = text[start:text.index("\n## ", start + 5)]
    out = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                out.append(argv)
    return out


def small_samples(root: Path) -> None:
    """example_data/synthetic_room and synthetic_photo as the tool makes them, small."""
    from tools.make_synthetic_scene import main as make_scene

    with contextlib.redirect_stdout(io.StringIO()):
        assert make_scene(["--out", str(root / "example_data" / "synthetic_room"), "--seed", "0", "--height", "64"]) == 0
        assert make_scene(["--out", str(root / "example_data" / "synthetic_photo"), "--seed", "1", "--height", "48",
                           "--photo-hfov", "70"]) == 0


#: lines not run, with the reason (module header)
NOT_RUN = {
    "runtime=ray": "Ray's start-up (~25 s); tests/test_ray_batch.py",
    "pano_16k.png": "a 16384x8192 panorama; tests/test_size_guard.py",
    "tools/bench_memory.py": "a benchmark of minutes",
}


def not_run(argv: list[str]) -> str | None:
    return next((why for key, why in NOT_RUN.items() if any(key in a for a in argv)), None)


def run_tool(argv: list[str], cwd: Path) -> None:
    import importlib
    import os

    module = importlib.import_module(argv[2])
    args = argv[3:] + (["--height", "64"] if "--height" in argv else []) + (["--frames", "8"] if "--frames" in argv
                                                                             else [])
    old = os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(io.StringIO()):
            assert module.main(args) == 0, argv
    finally:
        os.chdir(old)


def cli_args(args: list[str], n: int) -> list[str]:
    """The line's overrides plus what the test adds (module header)."""
    args = list(args)
    mode = next((a.split("=", 1)[1] for a in args if a.startswith("mode=")), "predict")
    if not any(a.startswith("predictor=") for a in args):
        args.append("predictor=synthetic")
        if mode == "video":
            clip = Path(next(a.split("=", 1)[1] for a in args if a.startswith("dataset.image_path=")))
            args.append(f"predictor.gt_distance='{clip.parent / 'distance' / '{frame:06d}.npy'}'")
    if mode == "video":
        start = int(next((a.split("=", 1)[1] for a in args if a.startswith("video.frames.start=")), 0))
        args = [a for a in args if not a.startswith("video.frames.end=")] + [f"video.frames.end={start + 3}"]
    if "-m" not in args and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir=outputs/{mode}/{n}")  # Hydra's default is a time-stamped folder like it
    return args + TINY


def test_readme_modes_examples_run_as_written(tmp_path, one_cpu_thread):
    commands = modes_commands()
    named = {Path(m[1]) for argv in commands for a in argv for m in [re.match(r"[\w.]+=(example_data/[^ ]+)", a)] if m}
    assert named, "README's Modes section names no sample"
    for path in named:
        assert (PROJECT_ROOT / path).exists(), f"README names {path}, which is not in the checkout"
    small_samples(tmp_path)
    ran, skipped, seen = [], [], set()
    import time

    for n, argv in enumerate(commands):
        start = time.perf_counter()
        if not_run(argv):
            skipped.append(argv)
            continue
        if argv[:3] == ["python", "-m", argv[2]] and argv[2].startswith("tools."):
            run_tool(argv, tmp_path)
        elif argv[:2] == ["python", "core_exp_runner.py"]:
            args = cli_args(argv[2:], n)
            same = tuple(sorted(a for a in args if not re.match(r"(hydra\.run\.dir|[\w.]*output_dir)=", a)))
            if same in seen:
                skipped.append(argv)
                continue
            seen.add(same)
            proc = run_cli(args, tmp_path, in_process="-m" not in args, OMP_NUM_THREADS="1")
            assert proc.returncode == 0, f"{shlex.join(argv)} -> exit {proc.returncode}\n{proc.stderr[-3000:]}"
        else:
            pytest.fail(f"README's Modes section has a command this test does not know how to run: {shlex.join(argv)}")
        ran.append(argv)
        print(f"{time.perf_counter() - start:6.1f} s  {shlex.join(argv)[:100]}")
    modes = {a.split("=", 1)[1] for argv in ran for a in argv if a.startswith("mode=")}
    assert modes >= {"predict", "equirect", "single_view", "render_dense", "voxel", "eval", "video"}, modes
    duplicates = [a for a in skipped if not not_run(a)]
    assert len(duplicates) <= 1, duplicates  # the video line with networks
    # what the lines promise is there
    out = tmp_path / "outputs"
    assert (out / "room" / "distance.npy").is_file()
    assert np.load(out / "room" / "distance.npy").shape == (64, 128)
    assert list(out.glob("voxel/*/voxels.vox")) and list(out.glob("render_dense/*/mesh.glb"))
    assert list(out.glob("single_view/*/depth.npy")) and list(out.glob("eval/*/per_image.csv"))
    assert sorted(p.parent.name for p in (tmp_path / "tour_depth").glob("*/meta.json")) == [
        "room0-rgb", "room1-rgb", "room2-rgb"]
    assert (tmp_path / "walk_depth" / "meta.json").is_file() and (tmp_path / "walk_part" / "meta.json").is_file()
    assert Image.open(tmp_path / "example_data" / "synthetic_photo" / "rgb.png").size == (64, 48)


def section_commands(title: str) -> list[list[str]]:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    section = text[start:text.index("\n## ", start + 5)]
    return [shlex.split(line, comments=True) for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
            for line in block.replace("\\\n", " ").splitlines() if shlex.split(line, comments=True)]


def test_without_weights_examples_pass_the_config_check(compose_cfg):
    """README's "Without weights" lines name files that exist and configs with no problem at all (weights included:
    the random-weights line must need none); they are not run here (the Modes test runs the same modes; a random
    full-size network is minutes on a CPU)."""
    from modules.validation import config_problems

    commands = section_commands("Without weights")
    runner = [argv[2:] for argv in commands if argv[:2] == ["python", "core_exp_runner.py"]]
    assert len(runner) >= 4 and any("predictor.midas.weights=random" in args for args in runner)
    for args in runner:
        for a in args:
            m = re.match(r"[\w.]+=(example_data/\S+)", a)
            assert m is None or (PROJECT_ROOT / m[1]).exists(), a
        assert config_problems(compose_cfg([*args, "paths.output_dir=/tmp/unused"])) == [], args
    tools = [argv for argv in commands if argv[:2] == ["python", "-m"]]
    assert tools and all((PROJECT_ROOT / Path(*argv[2].split("."))).with_suffix(".py").is_file() for argv in tools)
