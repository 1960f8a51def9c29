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


# --- one set of defaults: params.yaml ------------------------------------------------------------------------
# Sections whose every key has a default: built from defaults they equal params.yaml's. Left out: data (None means
# "this stage was not given that role"), datasets/prepare/split/subsets/networks (required keys, per-domain
# sizes), report (its comparisons are declarations, made in params.yaml only).
DEFAULTED = ("train", "pretrain", "finetune", "baseline", "tune", "study", "evaluate", "promote")


@pytest.mark.parametrize("name", DEFAULTED)
def test_dataclass_defaults_are_params_yaml(name):
    import dataclasses

    from conftest import ROOT
    from lesionseg.config import SECTIONS, ProjectConfig

    loaded = getattr(ProjectConfig(load_params(ROOT / "params.yaml")), name)
    defaults = SECTIONS[name]()
    differ = {f.name: (getattr(defaults, f.name), getattr(loaded, f.name)) for f in dataclasses.fields(defaults)
              if getattr(defaults, f.name) != getattr(loaded, f.name)}
    assert not differ, f"{name}: dataclass default vs params.yaml {differ}; params.yaml is the source"


# --- the paper-scale study: params-full.yaml -----------------------------------------------------------------


def test_full_study_overrides_only_keys_params_yaml_has():
    from conftest import ROOT
    from lesionseg.config import FULL_STUDY_FILE, load_overrides

    params, overrides = load_params(ROOT / "params.yaml"), load_overrides(ROOT / FULL_STUDY_FILE)
    unknown = [key for key in flatten(overrides) if not _has(params, key.split("."))]
    assert not unknown, f"{FULL_STUDY_FILE} sets keys params.yaml does not have (a typo?): {unknown}"


def _has(params, parts) -> bool:
    node = params
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_full_study_command_sets_exactly_params_full_yaml():
    """The printed `dvc exp run -S` lines, applied as DVC applies them, give load_full_config's configuration."""
    import shlex

    import yaml

    from conftest import ROOT
    from lesionseg.config import ProjectConfig, apply_overrides, full_study_command, load_full_config

    argv = shlex.split(full_study_command(ROOT))
    assert argv[:5] == ["dvc", "exp", "run", "-n", "full-study"]
    params = load_params(ROOT / "params.yaml")
    for flag, assignment in zip(argv[5::2], argv[6::2]):
        assert flag == "-S"
        key, _, text = assignment.partition("=")
        value = yaml.safe_load(text)  # as `dvc exp run -S` parses a value
        for part in reversed(key.split(".")):
            value = {part: value}
        params = apply_overrides(params, value)
    full = load_full_config(ROOT)
    for name in ("datasets", "prepare", "networks", "train", "study", "pretrain", "finetune", "baseline", "tune"):
        assert getattr(ProjectConfig(params), name) == getattr(full, name), name
    assert full.train.budget_steps == 250 * 50 and full.study.repeats == [0, 1, 2, 3, 4]
    # lists replace, mappings merge
    assert apply_overrides({"a": {"b": [1, 2], "c": 1}}, {"a": {"b": [3]}}) == {"a": {"b": [3], "c": 1}}


# --- datasets as data: each kind, and the one-line errors a lab meets ------------------------------------------


def test_each_dataset_kind_is_typed():
    from lesionseg.config import BrukerDataset, NiftiDataset, ProjectConfig, SyntheticDataset

    cfg = ProjectConfig({"datasets": {
        "synthetic": {"rat": {"domain": "rat", "cases": 4, "seed": 1}},
        "bruker": {"lab-mice": {"studies": "lab/studies", "masks": "lab/masks", "scan_id": 5,
                                "subject_type": "Quadruped", "subject_pose": "Head_Prone"}},
        "nifti": {"old-mice": {"path": "/data/Dataset001_mice"}}},
        "data": {"source": "rat", "target": "lab-mice"}})
    datasets = cfg.datasets
    assert datasets.synthetic_dataset("rat") == SyntheticDataset("rat", 4, 1)
    assert datasets.bruker_dataset("lab-mice") == BrukerDataset("lab/studies", "lab/masks", scan_id=5,
                                                                subject_type="Quadruped", subject_pose="Head_Prone")
    assert datasets.nifti_dataset("old-mice") == NiftiDataset("/data/Dataset001_mice")
    assert [datasets.kind_of(n) for n in datasets.names()] == ["synthetic", "bruker", "nifti"]
    target = cfg.data.role("target")
    assert (target.name, target.raw) == ("lab-mice", "data/raw/lab-mice")


@pytest.mark.parametrize("datasets, says", [
    ({"dicom": {}}, "unknown kind(s) ['dicom']"),
    ({"synthetic": {"m": {"domain": "mouse", "cases": 2, "seed": 0}}, "nifti": {"m": {"path": "x"}}},
     "'m' is declared as synthetic and nifti"),
    ({"synthetic": {"m": {"domain": "cat", "cases": 2, "seed": 0}}}, "domain='cat' is not rat or mouse"),
    ({"bruker": {"m": {"studies": "s"}}}, "datasets.bruker.m: missing key(s) ['masks']"),
    ({"bruker": {"m": {"studies": "s", "masks": "k", "protocl": "T2"}}}, "unknown key(s) ['protocl']"),
    ({"nifti": {"my mice": {"path": "x"}}}, "dataset name 'my mice' must be letters"),
])
def test_bad_datasets_are_one_line(datasets, says):
    from lesionseg.config import ProjectConfig

    with pytest.raises(ConfigError) as err:
        ProjectConfig({"datasets": datasets}).datasets
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_stage_asking_for_an_undeclared_dataset_names_the_declared_ones():
    from lesionseg.config import ProjectConfig

    datasets = ProjectConfig({"datasets": {"synthetic": {"rat": {"domain": "rat", "cases": 2, "seed": 0}}}}).datasets
    with pytest.raises(ConfigError, match=r"datasets.bruker.rat is not declared; declared bruker datasets: none"):
        datasets.bruker_dataset("rat")


def test_published_weights_as_source_set_the_architecture_of_every_arm():
    from lesionseg.config import ProjectConfig

    published = ProjectConfig({"finetune": {"source": "/w/ratlesnetv2-model-1",
                                            "source_network": {"ratlesnetv2": {"filters": 32}}}}).finetune
    assert published.published and published.source == "/w/ratlesnetv2-model-1"
    assert published.network("ratlesnetv2", {"filters": 16}) == {"filters": 32}
    assert published.network("unet", {"channels": [4]}) == {"channels": [4]}
    ours = ProjectConfig({"finetune": {"source": "models/pretrained"}}).finetune
    assert not ours.published and ours.source == "pretrain"  # the spelling the training code knows
    assert ours.network("ratlesnetv2", {"filters": 16}) == {"filters": 16}
    with pytest.raises(ConfigError, match="source_network describes a weights file"):
        ProjectConfig({"finetune": {"source_network": {"ratlesnetv2": {"filters": 32}}}}).finetune


@pytest.mark.parametrize("finetune, says", [
    ({"arms": {"ful": {"lr": 0.1}}}, "finetune.arms: unknown key(s) ['ful']"),
    ({"arms": {"partial": {"freeze_depth": {"unet": 0}}}}, "{'unet': 0} must be block counts >= 1"),
    ({"arms": {"full": {"lr": "fast"}}}, "finetune.arms.full.lr='fast' has the wrong type"),
    ({"train": {"epoch": 3}}, "finetune.train: unknown key(s) ['epoch']"),
])
def test_finetune_sections_are_typed_and_checked_when_read(finetune, says):
    """Typed sections, validated once when a stage reads them (not deep inside a training run)."""
    from lesionseg.config import ArmSettings, ProjectConfig

    with pytest.raises(ConfigError) as err:
        ProjectConfig({"finetune": finetune}).finetune
    assert says in str(err.value)
    arms = ProjectConfig({"finetune": {"arms": {"scratch": {"lr": 0.02}}}}).finetune.arms
    assert arms.scratch == ArmSettings(lr=0.02) and arms.partial.freeze_depth["ratlesnetv2"] == 5
