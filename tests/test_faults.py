"""Faults survived: a training process killed mid-epoch, a tracking server that goes away, atomic writes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lesionseg.data.io import atomic_path, write_json
from lesionseg.errors import TrackingError
from lesionseg.tracking.run import train_tracked
from conftest import cell_spec, ctx
from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.training.fit import LAST, load_checkpoint

TRAIN_SCRIPT = textwrap.dedent("""
    import sys, yaml
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from lesionseg.tracking.run import train_tracked
    from conftest import cell_spec, ctx
    root = Path(sys.argv[1])
    params = yaml.safe_load((root / "params.yaml").read_text())
    spec = cell_spec(params, "ratlesnetv2", "scratch", 4, "noaug", root)
    train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/out", register_as="lesionseg-mouse",
                  progress=False)
""")


def _epochs_in_checkpoint(path: Path) -> int:
    return load_checkpoint(path)["state"]["epoch"] if path.exists() else 0


def test_process_killed_mid_training_resumes_into_the_same_run(tiny_project, tiny_params):
    root = tiny_project
    epochs = 30  # long enough that the poll below sees the run in flight
    params = {**tiny_params, "train": {**tiny_params["train"], "epochs": epochs, "patience_steps": 10_000}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    script = root / "train.py"
    script.write_text(TRAIN_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(Path(__file__).parent)], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "checkpoints/out" / LAST
    deadline = time.time() + 120
    while _epochs_in_checkpoint(last) < 2 and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _epochs_in_checkpoint(last)
    assert 2 <= killed_at < epochs
    spec = cell_spec(params, "ratlesnetv2", "scratch", 4, "noaug", root)
    result = train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/out", register_as=TARGET_MODEL,
                           progress=False)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("lesionseg-finetune").experiment_id])
    assert [r.info.run_id for r in runs] == [result["run_id"]], "one run, resumed"
    steps = [m.step for m in client.get_metric_history(result["run_id"], "val_dice")]
    per_epoch = params["train"]["iterations_per_epoch"]
    assert sorted(set(steps)) == [e * per_epoch for e in range(1, epochs + 1)], steps
    assert len(client.search_model_versions(f"name='{TARGET_MODEL}'")) == 1, "no duplicate model versions"
    assert int(client.get_run(result["run_id"]).data.tags["resumed_from_epoch"]) == killed_at


def test_tracking_server_gone_mid_run_gives_clear_error_and_resume_logs_what_it_missed(tiny_project, tiny_params,
                                                                                       monkeypatch):
    """The checkpoint is written before the epoch's metrics are logged: the epoch the lost store missed is on disk,
    and resuming logs it once."""
    root = tiny_project
    spec = cell_spec(tiny_params, "ratlesnetv2", "scratch", 4, "noaug", root)
    from lesionseg.tracking import callback

    original = callback.MlflowClient.log_batch

    def server_gone(self, run_id, metrics=(), *args, **kwargs):
        if metrics:  # params/tags at the start of the run still reach the store; epoch metrics do not
            raise ConnectionError("Connection refused: http://127.0.0.1:5000")
        return original(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(callback.MlflowClient, "log_batch", server_gone)
    with pytest.raises(TrackingError) as err:
        train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/out", progress=False)
    assert "lost the MLflow tracking store" in str(err.value) and "\n" not in str(err.value)
    checkpoint = load_checkpoint(root / "checkpoints/out" / LAST)
    assert checkpoint["state"]["epoch"] == 1 and "optimizer" in checkpoint
    monkeypatch.undo()  # the store is back
    result = train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/out", progress=False)
    history = MlflowClient().get_metric_history(result["run_id"], "val_dice")
    per_epoch, epochs = tiny_params["train"]["iterations_per_epoch"], tiny_params["train"]["epochs"]
    assert sorted(m.step for m in history) == [e * per_epoch for e in range(1, epochs + 1)]


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    target = tmp_path / "out" / "table.json"
    write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("crash while writing")
    assert yaml.safe_load(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.json"]
