"""Every config group composes and every `_target_` in it instantiates."""


import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from modules.config import PROJECT_ROOT

CONFIGS = PROJECT_ROOT / "configs"
# groups whose options need something the test machine lacks (network weights): composed, but built with tiny
# random-weight overrides in the predictor tests instead
NEEDS_WEIGHTS = {("predictor", "midas_v31"), ("predictor", "depth_anything_v2"), ("predictor", "joint"),
                 ("predictor", "depth_pro"), ("predictor", "joint_metric")}


def group_options():
    for group in sorted(p for p in CONFIGS.iterdir() if p.is_dir() and p.name not in ("local",)):
        for option in sorted(group.glob("*.yaml")):
            yield group.name, option.stem


def find_targets(node, path=""):
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
            return
        for key in node:
            yield from find_targets(node[key], f"{path}.{key}" if path else str(key))


@pytest.mark.parametrize("group, option", list(group_options()))
def test_every_group_option_composes_and_instantiates(compose_cfg, group, option, tiny_scene):
    overrides = [f"{group}={option}", "paths.output_dir=/tmp/unused"]
    cfg = compose_cfg(overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg[group] is not None
    if (group, option) in NEEDS_WEIGHTS:
        pytest.skip("real networks need weights; tiny configs of these classes are tested in test_predictors_*")
    targets = list(find_targets(cfg[group]))
    for path, node in targets:
        if group == "predictor" and option == "synthetic":
            node = OmegaConf.merge(node, {"gt_distance": str(tiny_scene.with_name("distance.npy"))})
        obj = instantiate(node)
        assert obj is not None, path


def test_default_config_builds_the_pipeline(compose_cfg, tiny_scene):
    from modules.pipeline import build_pipeline

    cfg = compose_cfg(["paths.output_dir=/tmp/unused"])
    assert cfg.predictor._target_.endswith("JointPredictor")  # the product's default: both networks on every face
    cfg = compose_cfg(["paths.output_dir=/tmp/unused", "predictor=synthetic",
                       f"predictor.gt_distance={tiny_scene.with_name('distance.npy')}"])
    pipeline = build_pipeline(cfg)
    assert pipeline.cameras().num_faces == 20


def test_unknown_mode_is_a_clear_error():
    import core_exp_runner
    from modules.errors import UserError

    with pytest.raises(UserError, match="unknown mode 'nope'.*predict"):
        core_exp_runner.mode_function("nope")
    for name in core_exp_runner.MODES:
        assert callable(core_exp_runner.mode_function(name))
