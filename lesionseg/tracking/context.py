"""Where a run is logged from (kept apart from the MLflow code so that stage scripts can build it cheaply)."""
from __future__ import annotations

from dataclasses import dataclass

from lesionseg.layout import Layout


@dataclass(frozen=True)
class RunContext:
    """Where a run is logged from: the project, and what the launcher told the stage.

    ``launched_run_id``: the run ``mlflow run`` opened (it exports MLFLOW_RUN_ID; the stage passes it here).
    ``dvc_exp_name``: the experiment ``dvc exp run`` is in (DVC_EXP_NAME), for the lineage tags.
    """

    layout: Layout
    launched_run_id: str | None = None
    dvc_exp_name: str = ""
