"""Inference: seconds per scan of ``lesionseg.inference.predict_files`` at paper size, per network.

``python benchmarks/bench_inference.py [--quick]``. A synthetic mouse scan at the paper's acquisition (matrix
256, 32 slices of 0.5 mm) is segmented end to end (read NIfTI, RAS + resample to 0.1 x 0.5 x 0.1 mm, normalise,
crop to 160x32x96, sliding-window inference with one window, map back to the scan's grid, write the mask and
volumes.csv) by a freshly initialised network of each kind, loaded from a ``model.pt`` written the way
``lesionseg.runs._finish_run`` writes it.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import _common as c

N_THREADS = 2


def write_model_file(path: Path, arch: str, network: dict) -> None:
    import torch

    from lesionseg.networks import build_network
    from lesionseg.training.fit import save_checkpoint

    torch.manual_seed(0)
    model = build_network(arch, **network)
    save_checkpoint(path, {
        "model": model.state_dict(), "network": network, "arch": arch, "roi_size": list(c.PAPER_SHAPE),
        "preprocessing": {"target_spacing": list(c.PAPER_SPACING), "shape": list(c.PAPER_SHAPE),
                          "clip_percentiles": list(c.CLIP), "crop": "head"},
    })


def run(quick: bool) -> tuple[str, list[dict]]:
    import numpy as np
    import torch

    from lesionseg.data.io import read_volume, write_volume
    from lesionseg.data.preprocess import prepare_volume, restore_to_input
    from lesionseg.data.synthetic import synthesize_dataset
    from lesionseg.inference import Segmenter, predict_files, predict_mask

    torch.set_num_threads(N_THREADS)
    started = time.perf_counter()
    repeats = 1 if quick else 3
    networks = {k: c.PAPER_NETWORKS[k] for k in (("unet", "dynunet") if quick else c.PAPER_NETWORKS)}
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    try:
        raw = synthesize_dataset("mouse", 1, 2026, tmp / "raw", sham_fraction=0.0, matrix=256, n_slices=32)
        scan = next((raw / "imagesTr").glob("*.nii.gz"))
        volume = read_volume(scan)
        prep = dict(target_spacing=c.PAPER_SPACING, shape=c.PAPER_SHAPE, clip_percentiles=c.CLIP, crop="head")

        # the network-independent steps, timed on their own
        image, _, affine = prepare_volume(volume, None, **prep)
        mask0 = np.zeros(c.PAPER_SHAPE, np.uint8)
        mask0[60:100, 8:24, 40:70] = 1
        restored = restore_to_input(mask0, affine, volume)
        common = {
            "read NIfTI (`read_volume`)": c.median_times(lambda: read_volume(scan), 3),
            "prepare (`prepare_volume`: RAS, resample, normalise, crop)": c.median_times(
                lambda: prepare_volume(volume, None, **prep), 3),
            "map back (`restore_to_input`)": c.median_times(lambda: restore_to_input(mask0, affine, volume), 3),
            "write mask (`write_volume`, .nii.gz)": c.median_times(
                lambda: write_volume(tmp / "m.nii.gz", restored, volume.affine), 3),
        }
        common_s = sum(c.med(v) for v in common.values())

        rows, summary = [], []
        for arch, net in networks.items():
            model_file = tmp / f"{arch}.pt"
            write_model_file(model_file, arch, net)
            t_load = time.perf_counter()
            seg = Segmenter.from_file(model_file)
            t_load = time.perf_counter() - t_load
            out = tmp / f"out_{arch}"
            predict_files(seg, [scan], out, progress=False), predict_mask(seg.model, image, seg.roi_size)  # warm-up
            times, fwd = [], []
            for _ in range(repeats):  # interleaved, so that load changes hit both alike
                times += c.median_times(lambda: predict_files(seg, [scan], out, progress=False), 1, warmup=0)
                fwd += c.median_times(lambda: predict_mask(seg.model, image, seg.roi_size), 1, warmup=0)
            params = sum(p.numel() for p in seg.model.parameters())
            rows.append([f"{arch}", f"{params / 1e6:.2f} M", f"**{c.med(times):.2f}**", c.spread(times),
                         f"{c.med(fwd):.2f}", f"{min(fwd) / min(times) * 100:.0f}%", f"{t_load:.2f}"])
            summary.append(c.figure(f"`predict_files` s / scan, paper size (256x256x32 in), {arch}",
                                    f"{c.med(times):.2f} s"))
            print(f"  inference {arch}: {times}", file=sys.stderr, flush=True)
        table = c.table(["network (paper config)", "parameters", "s / scan (median)", "range", "network forward s",
                         "forward share (of the fastest calls)", "load model.pt s"], rows)
        common_rows = [[k, f"{c.med(v) * 1000:.0f}"] for k, v in common.items()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([
        "## Inference: `predict_files` at paper size",
        "",
        "`python benchmarks/bench_inference.py" + (" --quick`" if quick else "`") +
        f" (took {time.perf_counter() - started:.0f} s); `torch.set_num_threads({N_THREADS})`, CPU.",
        "",
        "One synthetic mouse scan, 256x256x32 int16 `.nii.gz` (0.1 x 0.1 x 0.5 mm), segmented end to end "
        "(read, RAS + resample to 0.1 x 0.5 x 0.1 mm, head-crop to 160x32x96, one sliding window of 160x32x96, map "
        f"back, write mask + volumes.csv); median of {repeats} calls after one warm-up, interleaved with {repeats} calls of the network alone. Networks freshly initialised "
        "with the paper-scale configs (RatLesNetV2 32 filters, UNETR img_size 160x32x96), loaded from a `model.pt` "
        "in `_finish_run`'s format. *network forward* = `predict_mask` on the prepared volume alone.",
        "",
        *table,
        "",
        "Network-independent steps (median of 3, ms):",
        "",
        *c.table(["step", "ms"], common_rows),
        "",
        f"- Everything but the network costs about {common_s:.2f} s per scan.",
        "",
    ]), summary


def main() -> None:
    args = c.cli(__doc__.splitlines()[0], "inference")
    text, summary = run(args.quick)
    c.emit(text, args.out, summary)


if __name__ == "__main__":
    main()
