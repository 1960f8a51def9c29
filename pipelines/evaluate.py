"""DVC stage / MLproject entry `evaluate`: every trained target model on the raw test scans, in native space
(metrics/test/, metrics/test.json, overlays), logged into each model's run and version; @challenger by val Dice."""
from _stage import LAYOUT, config, run

from lesionseg.data.io import read_json, write_json
from lesionseg.evaluation.evaluate import trained_model_dirs
from lesionseg.tracking import store
from lesionseg.tracking.scores import choose_challenger, evaluate_and_log


def main() -> None:
    cfg = config()
    test_ids = read_json(LAYOUT.split_file(cfg.data.role("target").name))["test"]
    store.connect(LAYOUT.root)
    models = trained_model_dirs(LAYOUT.finetune_root, LAYOUT.tuned_root)
    headline, runs = evaluate_and_log(models, LAYOUT.resolve(cfg.data.role("target").raw), test_ids, LAYOUT,
                                      n_overlays=cfg.evaluate.n_overlays, amp=cfg.train_for("finetune").amp)
    for name, m in headline.items():
        print(f"evaluate: {name}: dice_lesion {m['dice_lesion']:.3f}, sham_fp_rate {m['sham_fp_rate']:.2f}, "
              f"hd95_mm {m['hd95_mm']:.2f}")
    write_json(LAYOUT.test_metrics_json, headline)
    best = choose_challenger(runs)
    if best:
        print(f"evaluate: @challenger -> {best['registered_model']} v{best['version']} ({best['run_name']})")


if __name__ == "__main__":
    run(main)
