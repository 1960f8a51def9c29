"""Optuna studies on tiny data with a real MLflow store and a real journal file."""
import dataclasses
import os
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from lesionseg.errors import TrackingError
from conftest import cell_spec, ctx, tune_cfg
from lesionseg.tuning import (PARENT_RUN_ATTR, WORKER_ATTR, display_storage, fail_dead_local_trials, open_storage,
                              open_study, study_name, tune)


def _base(params, root):
    base = cell_spec(params, "ratlesnetv2", "full", 4, "noaug", root, stage="tune")
    return dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=2))


def _children(client, parent_run_id):
    runs = client.search_runs(experiment_ids=[client.get_run(parent_run_id).info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags["optuna_trial"]))


def test_three_trial_study_has_parent_and_nested_child_runs(tiny_project, tiny_params):
    cfg = tune_cfg(tiny_params)
    study = tune(_base(tiny_params, tiny_project), cfg, ctx(tiny_project))
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 3 and study.study_name == study_name(_base(tiny_params, tiny_project), cfg)
    assert study.study_name.startswith("finetune-ratlesnetv2-n4-r0-")
    client = MlflowClient()
    parent = study.user_attrs[PARENT_RUN_ATTR]
    children = _children(client, parent)
    assert [int(r.data.tags["optuna_trial"]) for r in children] == [0, 1, 2]
    for run, trial in zip(children, sorted(trials, key=lambda t: t.number)):
        assert run.data.tags["trial_state"] == trial.state.name.lower()
        assert int(run.data.params["freeze_depth"]) == trial.params["freeze_depth"]
        assert float(run.data.params["train.lr"]) == pytest.approx(trial.params["lr"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_dice")]
    assert 0 <= max(t.params["freeze_depth"] for t in trials) <= 10


def test_pruner_prunes_a_bad_trial(tiny_project, tiny_params):
    # no Dice can exceed 1.1, so the threshold pruner must prune every trial at its first report
    cfg = dataclasses.replace(tune_cfg(tiny_params), n_trials=2, pruner="threshold", pruner_threshold=1.1,
                              pruner_warmup_epochs=0)
    study = tune(_base(tiny_params, tiny_project), cfg, ctx(tiny_project))
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(len(t.intermediate_values) == 1 for t in study.trials)
    children = _children(MlflowClient(), study.user_attrs[PARENT_RUN_ATTR])
    assert [r.data.tags["trial_state"] for r in children] == ["pruned", "pruned"]


def test_two_workers_share_one_journal_study(tiny_project, tiny_params):
    cfg = dataclasses.replace(tune_cfg(tiny_params), n_trials=4, pruner="none")
    study = tune(_base(tiny_params, tiny_project), cfg, ctx(tiny_project), workers=2)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 4, "the budget is the number of finished trials"
    assert len({t.number for t in trials}) == len(trials), "no duplicated trial numbers"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    workers = {t.user_attrs[WORKER_ATTR] for t in trials}
    assert len(workers) == 2, f"both workers ran trials: {workers}"
    assert len(_children(MlflowClient(), study.user_attrs[PARENT_RUN_ATTR])) == len(trials)


def test_resuming_adds_trials_to_the_same_study(tiny_project, tiny_params):
    cfg = dataclasses.replace(tune_cfg(tiny_params), n_trials=1, pruner="none")
    first = tune(_base(tiny_params, tiny_project), cfg, ctx(tiny_project))
    second = tune(_base(tiny_params, tiny_project), dataclasses.replace(cfg, n_trials=2), ctx(tiny_project))
    assert second.study_name == first.study_name
    assert len(second.trials) == 2
    assert second.user_attrs[PARENT_RUN_ATTR] == first.user_attrs[PARENT_RUN_ATTR]


def test_dead_local_worker_trial_is_failed_and_requeued(tiny_project, tiny_params):
    cfg = tune_cfg(tiny_params)
    study = open_study(_base(tiny_params, tiny_project), cfg, ctx(tiny_project))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trial = study.ask({"freeze_depth": optuna.distributions.IntDistribution(0, 10),
                       "lr": optuna.distributions.FloatDistribution(1e-3, 0.05, log=True)})
    import socket

    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{dead.stdout.strip()}")
    live = study.ask()
    live.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    assert fail_dead_local_trials(study) == [trial.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[trial.number] == TrialState.FAIL and states[live.number] == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == trial.params


def test_unreachable_storage_url_is_a_clear_error(tmp_path):
    with pytest.raises(TrackingError) as err:
        open_storage("postgresql+psycopg2://lesion:secret@127.0.0.1:9/nodb", tmp_path)
    message = str(err.value)
    assert "is unreachable" in message and "secret" not in message and "\n" not in message


def test_storage_shown_to_users_hides_only_a_password():
    assert display_storage("postgresql+psycopg2://lesion:secret@db:5432/optuna") == \
        "postgresql+psycopg2://lesion:***@db:5432/optuna"
    assert display_storage("tuning/journal.log") == "tuning/journal.log"


WORKER = """
import sys, yaml, dataclasses
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import cell_spec, ctx, tune_cfg
from lesionseg.tuning import open_study, run_trials
root = Path(sys.argv[1])
params = yaml.safe_load((root / "params.yaml").read_text())
cfg = dataclasses.replace(tune_cfg(params), n_trials=2, pruner="none")
base = cell_spec(params, "ratlesnetv2", "full", 4, "noaug", root, stage="tune")
base = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=40))  # long enough to be killed
run_trials(open_study(base, cfg, ctx(root)), base, cfg, ctx(root))
"""


def test_worker_killed_mid_trial_leaves_the_study_usable(tiny_project, tiny_params):
    import signal
    import time

    cfg = dataclasses.replace(tune_cfg(tiny_params), n_trials=2, pruner="none")
    base = _base(tiny_params, tiny_project)
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=40))  # the worker's trials
    study = open_study(base, cfg, ctx(tiny_project))
    from lesionseg.tuning import ensure_parent_run

    ensure_parent_run(study, base, cfg, ctx(tiny_project))
    script = tiny_project / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen([sys.executable, str(script), str(tiny_project), os.path.dirname(__file__)], env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        running = [t for t in open_study(base, cfg, ctx(tiny_project)).get_trials(states=(TrialState.RUNNING,))
                   if t.intermediate_values]
        if running:
            break
        assert worker.poll() is None, "worker ended before it could be killed"
        time.sleep(0.3)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed = running[0].number
    study = tune(base, cfg, ctx(tiny_project))  # the next worker goes on
    states = {t.number: t.state for t in study.get_trials()}
    assert states[killed] == TrialState.FAIL
    assert TrialState.RUNNING not in states.values()
    finished = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(finished) == 2
    assert any(t.user_attrs.get("retry_of") == killed for t in study.get_trials()), "the killed trial was re-queued"


def test_changed_training_data_starts_a_new_study(tiny_project, tiny_params):
    import numpy as np

    cfg = tune_cfg(tiny_params)
    base = _base(tiny_params, tiny_project)
    before = study_name(base, cfg)
    assert study_name(_base(tiny_params, tiny_project), cfg) == before, "unchanged inputs resume"
    case = tiny_project / "data" / "processed" / "mouse" / f"{base.train_ids[0]}.npz"
    with np.load(case) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    data["image"] = data["image"] + 0.5
    np.savez_compressed(case, **data)
    assert study_name(base, cfg) != before
    assert study_name(base, dataclasses.replace(cfg, lr_max=0.02)) != study_name(base, cfg)
