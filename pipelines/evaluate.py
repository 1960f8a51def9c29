"""DVC stage / MLproject entry `evaluate`: every fine-tuned model on the target test split.

Writes metrics/test/<name>.csv (per case) and <name>.json (nnU-Net-style summary), metrics/test.json
(headline numbers for `dvc metrics show`), overlays in reports/overlays/<name>/, logs all of it into each
model's training run, tags its registered version, and moves @challenger to the best model by val Dice.
"""
from _stage import ROOT, params, run

from lesionseg.config import section
from lesionseg.data.io import read_json, write_json
from lesionseg.evaluation import evaluate_model, trained_model_dirs
from lesionseg.tracking import store
from lesionseg.tracking.results import choose_challenger, log_test_results


def main() -> None:
    p = params()
    domain = section(p, "data")["target"]["name"]
    n_overlays = int(section(p, "evaluate").get("n_overlays", 2))
    test_ids = read_json(ROOT / "data" / "splits" / f"{domain}.json")["test"]
    store.connect(ROOT)
    headline, runs = {}, []
    for name, model_dir in trained_model_dirs(ROOT):
        run_info = read_json(model_dir / "run.json")
        files = {"csv": ROOT / "metrics" / "test" / f"{name}.csv", "json": ROOT / "metrics" / "test" / f"{name}.json",
                 "overlays": ROOT / "reports" / "overlays" / name}
        table, summary = evaluate_model(model_dir / "model.pt", ROOT / "data" / "processed" / domain, test_ids,
                                        per_case_csv=files["csv"], summary_json=files["json"],
                                        overlay_dir=files["overlays"], n_overlays=n_overlays)
        metrics = log_test_results(run_info, summary, list(files.values()))
        headline[name] = {k: metrics.get(k) for k in ("test_dice_mean", "test_hd95_mm_mean")}
        headline[name]["val_dice"] = run_info["best_val_dice"]
        runs.append(run_info)
        print(f"evaluate: {name}: Dice {metrics.get('test_dice_mean', float('nan')):.3f}, "
              f"HD95 {metrics.get('test_hd95_mm_mean', float('nan')):.2f} mm")
    write_json(ROOT / "metrics" / "test.json", headline)
    best = choose_challenger(runs)
    if best:
        print(f"evaluate: @challenger -> {best['registered_model']} v{best['version']} ({best['run_name']})")


if __name__ == "__main__":
    run(main)
