import pytest

from lesionseg.config import AugmentConfig, TrainConfig, flatten, from_mapping, load_params, section
from lesionseg.errors import ConfigError


def test_from_mapping_builds_nested_dataclasses():
    cfg = from_mapping(TrainConfig, {"epochs": 3, "lr": 1, "augment": {"flip_prob": 0.2}}, "train")
    assert cfg.epochs == 3
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.augment == AugmentConfig(flip_prob=0.2)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": "ten"}, "train.epochs='ten' has the wrong type (expected int)"),
        ({"lr": True}, "train.lr=True has the wrong type"),
        ({"epoch": 3}, "unknown key(s) ['epoch']"),
        ({"loss": "focal"}, "train.loss='focal' is not one of"),
        ({"epochs": 0}, "train.epochs=0 must be >= 1"),
        ({"patch_size": [32, "a", 16]}, "train.patch_size=[32, 'a', 16] has the wrong type"),
        ({"augment": {"flip": 1}}, "train.augment: unknown key(s) ['flip']"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        from_mapping(TrainConfig, values, "train")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_optional_list_accepts_null_and_ints():
    assert from_mapping(TrainConfig, {"patch_size": None}, "train").patch_size is None
    assert from_mapping(TrainConfig, {"patch_size": [32, 32, 16]}, "train").patch_size == [32, 32, 16]


def test_flatten_dotted_keys_including_dataclasses():
    flat = flatten({"train": TrainConfig(epochs=2), "net": {"filters": 16}})
    assert flat["train.epochs"] == 2
    assert flat["train.augment.flip_prob"] == 0.5
    assert flat["net.filters"] == 16


def test_load_params_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_params(bad)
    with pytest.raises(ConfigError, match="missing section 'train'"):
        section({}, "train")


def test_project_params_yaml_builds_every_section():
    from pathlib import Path

    from lesionseg.config import SECTIONS, load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    for name in SECTIONS:
        getattr(cfg, name)  # builds and validates the section
    for stage in ("pretrain", "finetune", "tune"):
        cfg.train_for(stage)


def test_stage_train_overrides_merge_on_top_of_train():
    from lesionseg.config import ProjectConfig

    params = {"train": {"epochs": 3, "lr": 0.01, "augment": {"flip_prob": 0.1, "noise_prob": 0.2}},
              "pretrain": {"train": {"epochs": 9, "augment": {"flip_prob": 0.7}}},
              "finetune": {"train": {"lr": 0.002}}, "tune": {"train": {"epochs": 4}}}
    cfg = ProjectConfig(params)
    pre = cfg.train_for("pretrain")
    assert (pre.epochs, pre.lr, pre.augment.flip_prob, pre.augment.noise_prob) == (9, 0.01, 0.7, 0.2)
    tune = cfg.train_for("tune")
    assert (tune.epochs, tune.lr) == (4, 0.002)  # tune on top of finetune on top of train
    with pytest.raises(ConfigError, match="missing section 'subsets'"):
        cfg.subsets
