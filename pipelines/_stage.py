"""What every stage entry point shares: the project's config and layout, its run context, one-line errors."""
import os
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python pipelines/X.py` also runs in an env (MLflow's conda) without `pip -e`
from lesionseg.config import load_config  # noqa: E402
from lesionseg.errors import bug_report, user_error_line  # noqa: E402
from lesionseg.layout import Layout  # noqa: E402
from lesionseg.tracking import quiet; quiet.quiet_library_warnings(); quiet.exit_without_teardown()  # noqa: E402, E702
LAYOUT = Layout.at(ROOT)

def config():  # the project's params.yaml, typed
    return load_config(LAYOUT.params_file)


def context():  # what `mlflow run` (MLFLOW_RUN_ID) and `dvc exp run` (DVC_EXP_NAME) told this process
    from lesionseg.tracking.context import RunContext
    return RunContext(LAYOUT, os.environ.get("MLFLOW_RUN_ID") or None, os.environ.get("DVC_EXP_NAME", ""))


def run(main) -> None:  # errors a user caused (errors.user_error_line), and a 401/403 from an authenticated MLflow server, print as one line
    try:
        quiet.run_stage(main)  # a success ends without the interpreter's teardown (tracking/quiet.py)
    except Exception as err:
        from lesionseg.tracking.refusals import permission_error
        line = user_error_line(err) or permission_error(err)
        if line is None:  # a bug: its traceback, then a line that says so
            sys.exit(bug_report(err))
        sys.exit(f"error: {line}")
