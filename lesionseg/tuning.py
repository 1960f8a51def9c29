"""Optuna search over fine-tuning depth (``freeze_depth``) and learning rate, one study per sample size.

Each trial is a nested MLflow run under the study's parent run; trials report validation Dice every epoch
so the pruner can stop bad ones. Storage is a journal file (workers on one machine) or any Optuna RDB URL
(workers on many machines, e.g. PostgreSQL).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sqlalchemy.engine import make_url

from lesionseg.config import TrainConfig, TuneConfig
from lesionseg.data.io import write_json
from lesionseg.errors import ConfigError, TrackingError
from lesionseg.networks import build_network, network_blocks
from lesionseg.tracking import store
from lesionseg.tracking.callback import MlflowCallback
from lesionseg.tracking.context import RunContext
from lesionseg.tracking.import_weights import log_source_param, source_tags
from lesionseg.tracking.run import lineage_tags, log_run_start, train_tracked
from lesionseg.training.engine import build_loss
from lesionseg.training.setup import setup_training
from lesionseg.training.spec import RunSpec
from lesionseg.training.fit import FitState, fit

PARENT_RUN_ATTR = "mlflow_parent_run_id"
WORKER_ATTR = "worker"
RDB_PREFIXES = ("postgresql", "mysql", "sqlite", "oracle", "mssql")


def study_name(base: RunSpec, cfg: TuneConfig) -> str:
    """One study per arm, sample size and repeat, fingerprinted by what shapes a trial: the base spec (network,
    trial budget, case ids, pretrained weights' bytes), the search space and the prepared data's bytes. Changed
    inputs start a new study; unchanged ones (more trials, a longer timeout) resume the old one."""
    digest = hashlib.sha256()
    digest.update(base.fingerprint().encode())
    shaping = {k: v for k, v in cfg.search_params().items() if k not in ("n_trials", "timeout_s", "heartbeat_s")}
    digest.update(json.dumps(shaping, sort_keys=True, default=str).encode())
    for case_id in sorted({*base.train_ids, *base.val_ids}):
        digest.update((Path(base.prepared_dir) / f"{case_id}.npz").read_bytes())
    return f"finetune-{base.model}-n{base.sample_size}-r{base.repeat}-{digest.hexdigest()[:10]}"


def _is_rdb_url(storage: str) -> bool:
    return storage.split(":", 1)[0].split("+", 1)[0] in RDB_PREFIXES


def open_storage(storage: str, project_root: Path, heartbeat_s: int = 30) -> optuna.storages.BaseStorage:
    """A journal file (relative paths are under the project root) or an RDB URL with heartbeats, so a dead
    worker's trial is failed and retried rather than left RUNNING."""
    if _is_rdb_url(storage):
        try:
            return RDBStorage(storage, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                              engine_kwargs={"pool_pre_ping": True})
        except ImportError as err:
            raise TrackingError(f"Optuna storage {_redact(storage)}: database driver missing ({err}); "
                                "pip install psycopg2-binary and use postgresql+psycopg2://") from None
        except Exception as err:  # SQLAlchemy raises driver-specific errors
            reason = str(err).splitlines()[0][:160]
            raise TrackingError(
                f"Optuna storage {_redact(storage)} is unreachable ({reason}); check the URL and that the database runs"
            ) from None
    path = Path(storage)
    path = path if path.is_absolute() else project_root / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _redact(url: str) -> str:
    """Hide a password in a storage URL before it reaches a message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: say nothing of it
        return "<storage URL>"


def display_storage(storage: str) -> str:
    """The storage as a user may see it: a journal path as is, an RDB URL with its password hidden."""
    return _redact(storage) if _is_rdb_url(storage) else storage


def make_pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    """The pruner named in params.yaml."""
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                           n_warmup_steps=cfg.pruner_warmup_epochs)
    if cfg.pruner == "percentile":
        return optuna.pruners.PercentilePruner(cfg.pruner_percentile, n_startup_trials=cfg.pruner_startup_trials,
                                               n_warmup_steps=cfg.pruner_warmup_epochs)
    if cfg.pruner == "threshold":
        return optuna.pruners.ThresholdPruner(lower=cfg.pruner_threshold, n_warmup_steps=cfg.pruner_warmup_epochs)
    return optuna.pruners.NopPruner()


def open_study(base: RunSpec, cfg: TuneConfig, context: RunContext) -> optuna.Study:
    """Create or join (``load_if_exists``) the study of ``base`` (see :func:`study_name`)."""
    return optuna.create_study(
        study_name=study_name(base, cfg), storage=open_storage(cfg.storage, context.layout.root, cfg.heartbeat_s),
        sampler=optuna.samplers.TPESampler(seed=cfg.sampler_seed), pruner=make_pruner(cfg),
        direction="maximize", load_if_exists=True,
    )


class PruningCallback:
    """Reports each epoch's validation Dice to the trial and raises ``TrialPruned`` when told to."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_fit_start(self, state: FitState, resumed: bool) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], state: FitState) -> None:
        self.trial.report(metrics["val_dice_ema"], epoch)  # what the checkpoint choice uses
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (smoothed val Dice {metrics['val_dice_ema']:.3f})")

    def on_fit_end(self, state: FitState) -> None:
        pass


def n_blocks_of(spec: RunSpec) -> int:
    """How many blocks the spec's network has (freeze_depth ranges over 0 .. n_blocks - 1)."""
    return len(network_blocks(build_network(spec.model, **spec.network)))


def trial_spec(trial: optuna.Trial, base: RunSpec, cfg: TuneConfig) -> RunSpec:
    """The spec a trial trains: depth 0 is full fine-tuning, 1.. is partial."""
    depth = trial.suggest_int("freeze_depth", 0, n_blocks_of(base) - 1)
    lr = trial.suggest_float("lr", cfg.lr_min, cfg.lr_max, log=True)
    augment = trial.suggest_categorical("augment", [False, True]) if cfg.tune_augment else base.augment
    return dataclasses.replace(base, stage="tune", strategy="partial" if depth else "full", freeze_depth=depth,
                               augment=augment, train=dataclasses.replace(base.train, lr=lr))


class Objective:
    """Train one trial inside a nested MLflow run; returns its best validation Dice."""

    def __init__(self, base: RunSpec, cfg: TuneConfig, parent_run_id: str, context: RunContext) -> None:
        self.base, self.cfg, self.parent_run_id, self.context = base, cfg, parent_run_id, context

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        spec = trial_spec(trial, self.base, self.cfg)
        experiment_id = store.ensure_experiment(store.EXPERIMENTS["tune"], self.context.layout.root)
        name = f"{spec.model}/n{spec.sample_size}/r{spec.repeat}/trial-{trial.number}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name,
                              tags={"mlflow.parentRunId": self.parent_run_id, "optuna_trial": str(trial.number),
                                    "optuna_study": trial.study.study_name}) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            setup = setup_training(spec)
            log_run_start(spec, setup.model_info, lineage_tags(spec, self.context), self.context.layout,
                          self.context.dvc_exp_name)
            try:
                with tempfile.TemporaryDirectory(prefix="lesionseg-trial-") as ckpt:
                    state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train,
                                ckpt, roi_size=setup.roi_size, progress=False,
                                callbacks=[MlflowCallback(run.info.run_id), PruningCallback(trial)])
            except optuna.TrialPruned:
                mlflow.set_tag("trial_state", "pruned")
                raise
            except Exception:
                mlflow.set_tag("trial_state", "failed")
                raise
            mlflow.set_tag("trial_state", "complete")
            return state.best_val_dice


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail (and re-queue with the same params) RUNNING trials whose worker process on this host is gone.

    Written by hand because Optuna's journal storage has no heartbeat (RDB storages have one, and use
    ``RetryFailedTrialCallback`` instead). Only trials started on this host can be judged here.
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR, "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        failed.append(trial.number)
    return failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_trials(study: optuna.Study, base: RunSpec, cfg: TuneConfig, context: RunContext) -> None:
    """One worker: run trials until the study holds ``cfg.n_trials`` finished trials or time runs out."""
    store.connect(context.layout.root)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if not parent:
        raise TrackingError(f"study {study.study_name} has no MLflow parent run; start it with `lesionseg tune`")
    fail_dead_local_trials(study)
    budget = optuna.study.MaxTrialsCallback(cfg.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if _finished(study) < cfg.n_trials:
        study.optimize(Objective(base, cfg, parent, context), n_trials=cfg.n_trials, timeout=cfg.timeout_s,
                       callbacks=[budget], gc_after_trial=True)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def ensure_parent_run(study: optuna.Study, base: RunSpec, cfg: TuneConfig, context: RunContext) -> str:
    """The study's MLflow parent run (created once, its id kept as a study user attribute)."""
    store.connect(context.layout.root)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent:
        return parent
    experiment_id = store.ensure_experiment(store.EXPERIMENTS["tune"], context.layout.root)
    run = MlflowClient().create_run(experiment_id, run_name=f"{base.model}/n{base.sample_size}/r{base.repeat}/study",
                                    tags={"optuna_study": study.study_name, "sample_size": str(base.sample_size), "repeat": str(base.repeat),
                                          "model": base.model})
    params = {**cfg.search_params(), "storage_kind": "rdb" if _is_rdb_url(cfg.storage) else "journal"}
    MlflowClient().log_batch(run.info.run_id, params=[Param(k, str("" if v is None else v)) for k, v in params.items()])
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def study_outcome(study: optuna.Study) -> dict[str, Any]:
    """Best params and value, and how many trials ended in each state."""
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not completed:
        raise TrackingError(f"study {study.study_name}: no trial completed ({counts}); raise tune.n_trials or "
                            "loosen the pruner in params.yaml")
    best = study.best_trial
    return {"study": study.study_name, "best_value": best.value, "best_params": best.params,
            "best_trial": best.number, "best_run_id": best.user_attrs.get("mlflow_run_id"), "trials": counts}


def log_study_summary(study: optuna.Study, outcome: dict[str, Any], plot_dir: str | Path) -> list[Path]:
    """Best params/value on the parent run, plus optimisation history, importances and a depth x lr contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    parent = study.user_attrs[PARENT_RUN_ATTR]
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        parent,
        metrics=[Metric("best_val_dice", float(outcome["best_value"]), now, 0)]
        + [Metric(f"n_trials_{state}", float(count), now, 0) for state, count in outcome["trials"].items()],
        tags=[RunTag(f"best_{key}", str(value)) for key, value in outcome["best_params"].items()],
    )
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = {"optimization_history": lambda: ovm.plot_optimization_history(study),
             "param_importances": lambda: ovm.plot_param_importances(study),
             "contour_depth_lr": lambda: ovm.plot_contour(study, params=["freeze_depth", "lr"])}
    written = []
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental: our choice, no user action
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw()
        except (ValueError, RuntimeError) as err:  # e.g. importances need >= 2 completed trials
            print(f"tune: skipped {name} plot ({err})")
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(plot_dir / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        client.log_artifact(parent, str(plot_dir / f"{name}.png"), artifact_path="study")
        written.append(plot_dir / f"{name}.png")
    client.set_terminated(parent)  # FINISHED; a later resume of the study may still log to it
    return written


def _worker(base: RunSpec, cfg: TuneConfig, context: RunContext) -> None:
    study = open_study(base, cfg, context)
    run_trials(study, base, cfg, context)


def tune(base: RunSpec, cfg: TuneConfig, context: RunContext, *, workers: int = 1) -> optuna.Study:
    """Create/join the study for ``base.sample_size``, make sure it has a parent run, and run ``workers``
    processes on it (each opens the shared storage itself). Returns the study."""
    if workers < 1:
        raise ConfigError(f"--workers={workers} must be >= 1")
    study = open_study(base, cfg, context)
    ensure_parent_run(study, base, cfg, context)
    if workers == 1:
        run_trials(study, base, cfg, context)
        return study
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_worker, args=(base, cfg, context), name=f"tune-worker-{i}")
                 for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise TrackingError(f"tuning workers {failed} exited with an error; see their output above")
    return study


def final_spec(base: RunSpec, best_params: dict[str, Any], train: TrainConfig) -> RunSpec:
    """The final run of a study: the best depth/lr/augment with the full (not the trials') training budget."""
    depth = int(best_params["freeze_depth"])
    return dataclasses.replace(base, stage="finetune", strategy="partial" if depth else "full", freeze_depth=depth,
                               tuned=True,
                               augment=bool(best_params.get("augment", base.augment)),
                               train=dataclasses.replace(train, lr=float(best_params["lr"])))


def tune_and_retrain(base: RunSpec, cfg: TuneConfig, final_train: TrainConfig, context: RunContext, *,
                     workers: int = 1, register_as: str | None = None) -> dict[str, Any]:
    """Tune freeze_depth/lr from ``base`` (a trial's starting spec), then retrain the best setting with the
    final training budget and register it (tag ``tuned``). Writes ``tuning/nN/best.json`` and ``plots/``;
    the final model goes to ``models/tuned/nN``."""
    layout = context.layout
    study = tune(base, cfg, context, workers=workers)
    outcome = study_outcome(study)
    out_dir = layout.tuning_dir(base.sample_size, base.repeat)
    log_study_summary(study, outcome, out_dir / "plots")
    final = final_spec(base, outcome["best_params"], final_train)
    source = source_tags(final.pretrained)  # the weights' sha256, as a finetune cell carries it
    result = train_tracked(final, context, layout.tuned_dir(base.sample_size, base.repeat),
                           layout.checkpoints("tuned", f"n{base.sample_size}-r{base.repeat}"), register_as=register_as,
                           tags={"tuned": "true", "optuna_study": outcome["study"], **source})
    log_source_param(result["run_id"], source)
    outcome["final"] = {k: result.get(k) for k in ("run_id", "version", "best_val_dice", "model_uri")}
    write_json(out_dir / "best.json", outcome)
    return outcome
