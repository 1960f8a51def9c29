"""DVC stage `report`: summary.csv, paired tests, figures and README.md in reports/, logged to one MLflow
"study" run in lesionseg-eval."""
from _stage import ROOT, params, run

from lesionseg.config import section
from lesionseg.evaluation import trained_model_dirs
from lesionseg.reporting import build_report
from lesionseg.tracking import store
from lesionseg.tracking.results import log_study_report


def main() -> None:
    cfg = section(params(), "report")
    out_dir = ROOT / "reports" / "study"
    report = build_report(ROOT / "metrics" / "test", trained_model_dirs(ROOT), out_dir, n_boot=cfg["n_boot"], seed=cfg["seed"])
    store.connect(ROOT)
    run_id = log_study_report(out_dir, report["headline"], ROOT)
    for sentence in report["findings"]:
        print(f"report: {sentence}")
    print(f"report: {out_dir.relative_to(ROOT)}/README.md, MLflow run {run_id}")


if __name__ == "__main__":
    run(main)
