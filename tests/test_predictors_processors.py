"""Our network-input preparation against transformers' own image processors, on faces of a real panorama.

Every variant of every family: MiDaS v3.1 and Depth Anything V2 (relative and metric) against ``DPTImageProcessorPil``
(the PIL backend of ``DPTImageProcessor``) configured with the variant's size, aspect rule, multiple, bicubic
resampling and mean/std; Depth Pro against ``DepthProImageProcessor``.

Stated tolerance (DPT family): max |ours - processor| <= 1.5/255 and mean <= 0.5/255, in [0, 1] intensity units
(the difference divided by the variant's std). The processor resizes uint8 images with PIL and rounds the result to
uint8 (and clips bicubic overshoot); we resize float tensors, so up to about one grey level apart.

Intentional differences, documented here and in the code:

- ``antialias: true`` (our default) is what makes us match PIL: torch's antialiased bicubic uses PIL's kernel
  (a = -0.5) when enlarging as well as shrinking; without it torch uses a = -0.75 and enlarged faces differ by far
  more than one grey level (asserted below).
- Depth Anything V2's Hub processor sizes non-square images with the ``minimal`` rule, upstream uses
  ``lower_bound`` (both sides >= 518); we follow upstream. Tangent faces are square, where the two agree (asserted).
- Depth Pro's processor normalises first and resizes second (bilinear, no antialiasing); we resize first. Bilinear
  weights sum to one, so the orders agree to float rounding (asserted without torchvision, below).
  ``DepthProImageProcessor`` exists only with the torchvision backend in transformers 5.24; the project does not
  install torchvision (its wheels pull a CUDA build), so the direct comparison runs where torchvision is importable
  (max difference 3e-7 measured with torchvision 0.28 on faces of 256 and 2048 px).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modules.config import PROJECT_ROOT
from modules.geo_predictors.depth_anything import DEPTH_ANYTHING_V2_VARIANTS
from modules.geo_predictors.depth_pro import DEPTH_PRO_VARIANTS, DepthProPredictor
from modules.geo_predictors.midas import MIDAS_VARIANTS
from modules.geo_predictors.preprocessing import network_input_size, normalize_images, prepare_network_input
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import erp_to_faces

def _settings(v):
    return (v.input_size, v.keep_aspect_ratio, v.multiple_of, v.resize_method, v.mean, v.std)


# every variant, grouped by its preprocessing settings (variants sharing them get identical inputs)
_GROUPS: dict = {}
for _family, _table in (("midas_v31", MIDAS_VARIANTS), ("depth_anything_v2", DEPTH_ANYTHING_V2_VARIANTS)):
    for _name, _v in _table.items():
        _GROUPS.setdefault(_settings(_v), (_v, []))[1].append(f"{_family}/{_name}")
DPT_FAMILY = [(names, v) for v, names in _GROUPS.values()]
MAX_GREY_LEVELS, MEAN_GREY_LEVELS = 1.5, 0.5


@pytest.fixture(scope="module")
def sample_faces():
    """uint8 [F, 3, S, S] faces of example_data/living_room.png at 256 px (enlarged by every network) and 640 px
    (shrunk), two faces each (one looking at the ceiling, one at a wall)."""
    path = PROJECT_ROOT / "example_data" / "living_room.png"
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    out = {}
    for size in (256, 640):
        cams = IcosahedronProjection(level=0, face_size=size).cameras("cpu", torch.float32)
        faces = erp_to_faces(rgb[None], cams)[0][[0, 7]].clamp(0, 1)
        out[size] = (faces * 255 + 0.5).to(torch.uint8)
    return out


def _ours(u8, v, antialias=True, interpolation="bicubic"):
    size = network_input_size(tuple(u8.shape[-2:]), (v.input_size,) * 2, v.keep_aspect_ratio, v.multiple_of,
                              v.resize_method)
    return prepare_network_input(u8.float() / 255, size, v.mean, v.std, interpolation, antialias)


def _grey_levels(diff, v):
    return diff.abs() * torch.tensor(v.std).view(1, 3, 1, 1) * 255


def test_every_variant_is_covered():
    assert sum(len(names) for names, _ in DPT_FAMILY) == len(MIDAS_VARIANTS) + len(DEPTH_ANYTHING_V2_VARIANTS) == 15


@pytest.mark.parametrize("names, v", DPT_FAMILY, ids=["+".join(n) for n, _ in DPT_FAMILY])
def test_dpt_family_matches_the_pil_processor(sample_faces, names, v):
    from transformers import DPTImageProcessorPil
    from transformers.image_utils import PILImageResampling

    processor = DPTImageProcessorPil(
        size={"height": v.input_size, "width": v.input_size}, keep_aspect_ratio=v.keep_aspect_ratio,
        ensure_multiple_of=v.multiple_of, resample=PILImageResampling.BICUBIC, image_mean=list(v.mean),
        image_std=list(v.std), do_pad=False,
    )
    for size, u8 in sample_faces.items():
        ours = _ours(u8, v)
        theirs = processor(images=[f.permute(1, 2, 0).numpy() for f in u8], return_tensors="pt").pixel_values
        assert ours.shape == theirs.shape  # square faces: upstream lower_bound and the Hub's minimal rule agree
        grey = _grey_levels(ours - theirs, v)
        assert float(grey.max()) <= MAX_GREY_LEVELS and float(grey.mean()) <= MEAN_GREY_LEVELS, (size, names)


def test_antialias_changes_enlarged_bicubic_faces(sample_faces):
    """The old docstring said antialias has no effect when enlarging: for bicubic it switches the kernel."""
    from transformers import DPTImageProcessorPil
    from transformers.image_utils import PILImageResampling

    v = DEPTH_ANYTHING_V2_VARIANTS["large"]
    u8 = sample_faces[256]  # 256 -> 518: enlarged
    processor = DPTImageProcessorPil(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                     resample=PILImageResampling.BICUBIC, image_mean=list(v.mean),
                                     image_std=list(v.std))
    theirs = processor(images=[f.permute(1, 2, 0).numpy() for f in u8], return_tensors="pt").pixel_values
    with_aa, without = _ours(u8, v, True), _ours(u8, v, False)
    assert float(_grey_levels(with_aa - without, v).max()) > 5.0
    assert float(_grey_levels(without - theirs, v).max()) > 3 * float(_grey_levels(with_aa - theirs, v).max())
    # bilinear enlarging is the same with and without (what the Depth Pro processor does)
    assert torch.allclose(_ours(u8, v, True, "bilinear"), _ours(u8, v, False, "bilinear"), atol=1e-4)


def test_depth_pro_resize_then_normalise_equals_normalise_then_resize(sample_faces):
    """Depth Pro's processor: rescale + normalise, then torch bilinear resize without antialiasing to 1536."""
    v = DEPTH_PRO_VARIANTS["default"]
    assert DepthProPredictor.input_interpolation == "bilinear" and (v.mean, v.std) == ((0.5,) * 3, (0.5,) * 3)
    for u8 in sample_faces.values():
        theirs = F.interpolate(normalize_images(u8.float() / 255, v.mean, v.std), size=(1536, 1536), mode="bilinear",
                               align_corners=False, antialias=False)
        ours = _ours(u8, v, antialias=False, interpolation="bilinear")
        assert ours.shape == (2, 3, 1536, 1536)
        assert float((ours - theirs).abs().max()) < 1e-5


def test_depth_pro_matches_its_processor_where_torchvision_is_installed(sample_faces):
    pytest.importorskip("torchvision", reason="DepthProImageProcessor needs torchvision (not a project dependency)")
    from transformers import DepthProImageProcessor

    v = DEPTH_PRO_VARIANTS["default"]
    processor = DepthProImageProcessor()
    for u8 in sample_faces.values():
        theirs = processor(images=[f.permute(1, 2, 0).numpy() for f in u8], return_tensors="pt").pixel_values
        ours = _ours(u8, v, antialias=False, interpolation="bilinear")
        assert float((ours - theirs).abs().max()) < 1e-5
