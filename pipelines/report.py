"""DVC stage `report`: summary.csv, paired tests, figures and README.md in reports/study/, logged to one
MLflow "study" run in lesionseg-eval."""
from _stage import LAYOUT, config, context, run

from lesionseg.evaluation.evaluate import trained_model_dirs
from lesionseg.report import build_report
from lesionseg.tracking import store
from lesionseg.tracking.scores import log_study_report


def main() -> None:
    cfg = config().report
    models = trained_model_dirs(LAYOUT.finetune_root, LAYOUT.tuned_root)
    report = build_report(LAYOUT.test_metrics_dir, models, LAYOUT.report_dir, comparisons=cfg.declared(),
                          alpha=cfg.alpha, margin=cfg.equivalence_margin,
                          primary_sizes=cfg.primary_sizes)
    store.connect(LAYOUT.root)
    run_id = log_study_report(LAYOUT.report_dir, report["headline"], LAYOUT.root, context().dvc_exp_name)
    for sentence in report["findings"]:
        print(f"report: {sentence}")
    print(f"report: {LAYOUT.relative(LAYOUT.report_dir)}/README.md, MLflow run {run_id}")


if __name__ == "__main__":
    run(main)
