"""The MLflow side of the training loop's :class:`~lesionseg.training.fit.Callback`."""
from __future__ import annotations

import time

import mlflow
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from lesionseg.errors import TrackingError
from lesionseg.training.fit import FitState

EPOCH_METRICS = ("train_loss", "val_dice", "val_dice_ema", "lr", "epoch_seconds", "val_seconds")


class MlflowCallback:
    """Logs per-epoch metrics (MLflow step = optimizer step) and the best epoch into an existing run.

    Uses the client with an explicit ``run_id`` rather than the fluent "active run", so it also works for
    nested trial runs and for a run resumed in a new process.
    """

    def __init__(self, run_id: str, client: MlflowClient | None = None) -> None:
        self.run_id = run_id
        self.client = client or MlflowClient()

    def on_fit_start(self, state: FitState, resumed: bool) -> None:
        if resumed:
            self.client.set_tag(self.run_id, "resumed_from_epoch", str(state.epoch))
            self._backfill(state)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], state: FitState) -> None:
        self._log_epoch(epoch, metrics, state.step)

    def _backfill(self, state: FitState) -> None:
        """Log the epochs the checkpoint holds but the store lacks.

        The checkpoint is written before the epoch's metrics are logged, so a process killed (or a store lost)
        between the two leaves an epoch on disk with no metrics in MLflow; resuming fills that gap once.
        """
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "val_dice")}
        for entry in state.history:
            if int(entry["step"]) not in logged:
                self._log_epoch(int(entry["epoch"]), entry, int(entry["step"]))

    def _log_epoch(self, epoch: int, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(metrics[k]), now, step) for k in EPOCH_METRICS if k in metrics]
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as err:  # network/DB errors come in many types; the checkpoint is already on disk
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise TrackingError(
                f"lost the MLflow tracking store {mlflow.get_tracking_uri()} after epoch {epoch} ({reason}); "
                "the checkpoint is intact: bring the store back and re-run the stage to resume"
            ) from None

    def on_fit_end(self, state: FitState) -> None:
        # one batch (one store transaction) rather than four calls: the benchmark showed the per-call cost
        now = int(time.time() * 1000)
        metrics = [Metric("best_val_dice", state.best_val_dice, now, state.epoch),
                   Metric("best_epoch", state.best_epoch, now, state.epoch),
                   Metric("best_step", state.best_step, now, state.epoch),
                   Metric("epochs_run", state.epoch, now, state.epoch), Metric("steps_run", state.step, now, state.epoch)]
        self.client.log_batch(self.run_id, metrics=metrics,
                              tags=[RunTag("stopped_early", str(state.stopped_early).lower()),
                                    RunTag("converged", str(state.converged).lower())])
