"""DVC stage `synthesize`: synthetic rat (source) and mouse (target) raw datasets in the nnU-Net layout."""
from _stage import ROOT, params, run

from lesionseg.config import section
from lesionseg.data.synthetic import synthesize_dataset


def main() -> None:
    cfg = section(params(), "synthesize")
    for domain in ("rat", "mouse"):
        dom = cfg[domain]
        out = synthesize_dataset(domain, dom["cases"], cfg["seed"], ROOT / "data" / "raw" / domain,
                                 sham_fraction=cfg["sham_fraction"], matrix=dom.get("matrix"),
                                 n_slices=dom.get("n_slices"))
        print(f"synthesize: {dom['cases']} {domain} cases -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    run(main)
