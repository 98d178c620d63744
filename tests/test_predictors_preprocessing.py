"""Network input sizes, normalisation and output resizing of the depth predictors."""

import itertools

import pytest
import torch

from modules.geo_predictors.depth_anything import DEPTH_ANYTHING_V2_VARIANTS
from modules.geo_predictors.midas import MIDAS_VARIANTS
from modules.geo_predictors.preprocessing import (
    constrain_to_multiple_of,
    network_input_size,
    normalize_images,
    prepare_network_input,
    resize_prediction,
)


def test_constrain_to_multiple_of_rounds_and_respects_bounds():
    assert constrain_to_multiple_of(690.67, 14) == 686  # nearest
    assert constrain_to_multiple_of(510.0, 14, min_val=518) == 518  # 504 < 518 -> round up
    assert constrain_to_multiple_of(530.0, 32, max_val=512) == 512  # 544 > 512 -> round down
    assert constrain_to_multiple_of(48.0, 32) == 64  # 1.5 -> half to even (as numpy) -> 2
    with pytest.raises(ValueError):
        constrain_to_multiple_of(10.0, 0)


def test_midas_minimal_rule_keeps_aspect_and_scales_as_little_as_possible():
    # 480x640 to 512: the height scale (1.067) is nearer 1 than the width scale (0.8): fit height
    assert network_input_size((480, 640), (512, 512), True, 32, "minimal") == (512, 672)
    # 600x500 to 512: the width scale (1.024) is nearer 1: fit width, 614.4 -> 608
    assert network_input_size((600, 500), (512, 512), True, 32, "minimal") == (608, 512)


def test_depth_anything_lower_bound_rule_matches_upstream_example():
    # the 480x640 COCO image becomes 518x686 in the Depth Anything conversion check
    assert network_input_size((480, 640), (518, 518), True, 14, "lower_bound") == (518, 686)


def test_upper_bound_and_fixed_size_rules():
    assert network_input_size((480, 640), (512, 512), True, 32, "upper_bound") == (384, 512)
    assert network_input_size((300, 700), (384, 384), False, 32, "minimal") == (384, 384)


@pytest.mark.parametrize("method", ["minimal", "lower_bound", "upper_bound"])
def test_sizes_are_multiples_and_bounds_hold(method):
    for (h, w), multiple in itertools.product([(97, 97), (200, 333), (512, 512), (700, 301)], [14, 32]):
        nh, nw = network_input_size((h, w), (518, 518), True, multiple, method)
        assert nh % multiple == 0 and nw % multiple == 0
        if method == "lower_bound":
            assert nh >= 518 and nw >= 518
        if method == "upper_bound":
            assert nh <= 518 and nw <= 518


def test_square_faces_get_the_variant_input_size():
    for v in MIDAS_VARIANTS.values():
        assert network_input_size(
            (512, 512), (v.input_size,) * 2, v.keep_aspect_ratio, v.multiple_of, v.resize_method
        ) == (v.input_size, v.input_size)
    for v in DEPTH_ANYTHING_V2_VARIANTS.values():
        assert network_input_size(
            (512, 512), (v.input_size,) * 2, v.keep_aspect_ratio, v.multiple_of, v.resize_method
        ) == (518, 518)


def test_variant_tables_hold_the_upstream_preprocessing():
    for v in MIDAS_VARIANTS.values():
        assert v.mean == (0.5, 0.5, 0.5) and v.std == (0.5, 0.5, 0.5)
        assert v.multiple_of == 32 and v.resize_method == "minimal" and v.licence == "MIT"
    assert MIDAS_VARIANTS["beit_large_512"].input_size == 512 and MIDAS_VARIANTS["beit_large_512"].keep_aspect_ratio
    assert not MIDAS_VARIANTS["swin2_tiny_256"].keep_aspect_ratio and MIDAS_VARIANTS["swin2_tiny_256"].input_size == 256
    for v in DEPTH_ANYTHING_V2_VARIANTS.values():
        assert v.mean == (0.485, 0.456, 0.406) and v.std == (0.229, 0.224, 0.225)
        assert (v.input_size, v.multiple_of, v.resize_method) == (518, 14, "lower_bound")
    assert DEPTH_ANYTHING_V2_VARIANTS["small"].licence == "Apache-2.0"
    assert DEPTH_ANYTHING_V2_VARIANTS["large"].licence == "CC-BY-NC-4.0"


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="resize_method"):
        network_input_size((10, 10), (32, 32), True, 32, "nearest")
    with pytest.raises(ValueError, match="patch"):
        network_input_size((1000, 10), (32, 32), True, 32, "upper_bound")


def test_normalize_images_per_channel():
    images = torch.tensor([0.5, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    out = normalize_images(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(out[:, 0], torch.zeros(2, 4, 5))
    assert torch.allclose(out[:, 1], -torch.ones(2, 4, 5))
    assert torch.allclose(out[:, 2], torch.ones(2, 4, 5))
    out = normalize_images(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(0.5 - 0.485) / 0.229, -0.456 / 0.224, 0.594 / 0.225]))
    with pytest.raises(ValueError):
        normalize_images(images, (0.5, 0.5), (0.5, 0.5))


def test_prepare_network_input_resizes_and_keeps_dtype_device():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 40, 50, generator=g, dtype=torch.float64)
    out = prepare_network_input(images, (64, 96), (0.5,) * 3, (0.5,) * 3)
    assert out.shape == (3, 3, 64, 96) and out.dtype == torch.float64 and out.device == images.device
    # same size: only normalisation
    same = prepare_network_input(images, (40, 50), (0.5,) * 3, (0.5,) * 3)
    assert torch.allclose(same, images * 2 - 1)
    with pytest.raises(ValueError, match=r"\[B, 3, h, w\]"):
        prepare_network_input(images[:, :2], (64, 64), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="float"):
        prepare_network_input((images * 255).to(torch.uint8), (64, 64), (0.5,) * 3, (0.5,) * 3)


def test_resize_prediction_back_to_face_size():
    pred = torch.arange(16.0).view(1, 4, 4).repeat(2, 1, 1)
    out = resize_prediction(pred, (8, 6), "bilinear", True)
    assert out.shape == (2, 8, 6)
    # align_corners=True keeps the corner values
    assert out[0, 0, 0] == pred[0, 0, 0] and out[0, -1, -1] == pred[0, -1, -1]
    assert resize_prediction(pred, (4, 4), "bicubic", False) is pred
    with pytest.raises(ValueError):
        resize_prediction(pred[0], (8, 8), "bilinear", True)
