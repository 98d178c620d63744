"""Shared fixtures: small synthetic rooms with exact ground truth, and Hydra composition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.config import PROJECT_ROOT, register_resolvers
from modules.dataset.synthetic_scene import make_room, make_scene, render_erp

register_resolvers()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads wait on each other per op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_scene(folder: Path, seed: int, height: int, kind: str = "room") -> Path:
    """A procedural scene (``room``, or a :func:`make_scene` kind such as ``outdoor``) as the CLI writes it:
    folder/rgb.png + folder/distance.npy. Returns the rgb path."""
    rgb, distance = render_erp(make_room(seed) if kind == "room" else make_scene(kind, seed), height)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "rgb.png")
    np.save(folder / "distance.npy", distance)
    return folder / "rgb.png"


def spread_weights(model: torch.nn.Module) -> None:
    """Seeded random weights with a range (a fresh random init of the DPT heads gives outputs ~0 through its ReLU),
    so that outputs of two precisions or batch sizes can be compared."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            if name.endswith(("head.head.4.bias", "head.conv3.bias")):
                p.fill_(1.0)


@pytest.fixture(scope="session")
def room_scene(tmp_path_factory) -> Path:
    """A 512x256 room (seed 0); returns the path of its rgb.png (distance.npy beside it)."""
    return write_scene(tmp_path_factory.mktemp("room"), seed=0, height=256)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """A 128x64 room for runner tests."""
    return write_scene(tmp_path_factory.mktemp("tiny"), seed=1, height=64)


def compose(overrides: list[str] | None = None):
    """Compose the project's config as the runner would, with paths.output_dir set (no Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture
def compose_cfg():
    return compose
