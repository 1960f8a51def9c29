"""The precision a run trains in (bf16 / fp32) is part of its identity: MLflow param, fingerprint, resume, study."""
import dataclasses

import pytest
from mlflow.tracking import MlflowClient

from conftest import cell_spec, ctx, tune_cfg
from lesionseg.tracking.callback import MlflowCallback
from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.tracking.run import train_tracked
from lesionseg.training import precision


def _amp_spec(params, root, amp=True):
    spec = cell_spec(params, "ratlesnetv2", "scratch", 4, "noaug", root)
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, amp=amp, epochs=2))


def test_fingerprint_and_study_name_follow_the_precision_train_amp_gives(tiny_project, tiny_params, monkeypatch):
    from lesionseg.tuning import study_name

    spec = _amp_spec(tiny_params, tiny_project)
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: True)
    bf16 = spec.precision, spec.fingerprint(), study_name(spec, tune_cfg(tiny_params))
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: False)  # same params, a CPU without bf16
    fp32 = spec.precision, spec.fingerprint(), study_name(spec, tune_cfg(tiny_params))
    assert (bf16[0], fp32[0]) == ("bf16", "fp32")
    assert bf16[1] != fp32[1] and bf16[2] != fp32[2]
    assert fp32[1] == spec.fingerprint()  # deterministic


def test_a_bf16_checkpoint_is_not_resumed_in_fp32_and_mlflow_tells_the_runs_apart(tiny_project, tiny_params,
                                                                                 monkeypatch):
    root = tiny_project
    spec = _amp_spec(tiny_params, root)
    original = MlflowCallback.on_epoch_end

    def crash_at_one(self, epoch, metrics, state):
        original(self, epoch, metrics, state)
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(precision, "_native_bf16_here", lambda: True)
    monkeypatch.setattr(MlflowCallback, "on_epoch_end", crash_at_one)
    with pytest.raises(KeyboardInterrupt):
        train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/c", register_as=TARGET_MODEL,
                      progress=False)
    monkeypatch.setattr(MlflowCallback, "on_epoch_end", original)
    client = MlflowClient()
    crashed = client.search_runs([client.get_experiment_by_name("lesionseg-finetune").experiment_id])[0]
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: False)  # the same cell, on a CPU without bf16
    result = train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/c", register_as=TARGET_MODEL,
                           progress=False)
    assert result["run_id"] != crashed.info.run_id, "a bf16 run was continued in fp32"
    fresh = client.get_run(result["run_id"])
    assert crashed.data.params["precision"] == "bf16" and fresh.data.params["precision"] == "fp32"
    assert crashed.data.tags["fingerprint"] != fresh.data.tags["fingerprint"] == spec.fingerprint()
