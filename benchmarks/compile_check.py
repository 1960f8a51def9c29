"""Does torch.compile pay for a demo cell? Compile time and step time of RatLesNetV2, eager against compiled.

Issue 28 item 4. One process, the demo's network (params.yaml ``networks.ratlesnetv2``), batch and volume size,
bf16 autocast where the CPU has it (as training does): the first compiled step (compilation; with Inductor's
on-disk cache warm on a second run) and the mean of the next steps, against eager steps measured in the same
process. A cell trains a few hundred steps in a fresh process, so compilation must pay for itself within one
cell. Run by hand::

    python benchmarks/compile_check.py --steps 20 >> benchmarks/results_compile.md
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import yaml

from lesionseg.networks import build_network
from lesionseg.training.engine import build_loss
from lesionseg.training.precision import autocast_context

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(model, loss_fn, optimizer, batch, label, amp: bool, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps (forward, backward, AdamW step)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(torch.device("cpu"), amp):
            loss = loss_fn(model(batch), label)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    shape, batch_size = params["prepare"]["mouse"]["shape"], params["train"]["batch_size"]
    torch.manual_seed(0)
    batch = torch.randn(batch_size, 1, *shape)
    label = (torch.rand(batch_size, 1, *shape) > 0.9).float()
    loss_fn = build_loss(params["train"]["loss"])
    rows = []
    for mode in ("eager", "compiled"):
        model = build_network("ratlesnetv2", **params["networks"]["ratlesnetv2"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        net = torch.compile(model) if mode == "compiled" else model
        first = step_seconds(net, loss_fn, optimizer, batch, label, params["train"]["amp"], 1)[0]
        rest = step_seconds(net, loss_fn, optimizer, batch, label, params["train"]["amp"], args.steps)
        rows.append((mode, first, sum(rest) / len(rest)))
    print(f"\n## {time.strftime('%Y-%m-%d %H:%M')} UTC, torch {torch.__version__}, {args.threads} threads, "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}, amp {params['train']['amp']}\n")
    print("| mode | first step (s) | mean of next steps (s) |\n|---|---|---|")
    for mode, first, mean in rows:
        print(f"| {mode} | {first:.2f} | {mean:.3f} |")
    (eager_first, eager_mean), (compiled_first, compiled_mean) = [(r[1], r[2]) for r in rows]
    saved = eager_mean - compiled_mean
    pays = f"{(compiled_first - eager_first) / saved:.0f} steps" if saved > 0 else "never (not faster per step)"
    print(f"\nCompilation pays for itself after: {pays}.")


if __name__ == "__main__":
    main()
