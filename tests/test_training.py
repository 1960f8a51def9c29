"""The training core on tiny in-memory data: loss, one epoch, fit, checkpoints, resume, determinism."""
import numpy as np
import pytest
import torch

from lesionseg.config import AugmentConfig, TrainConfig
from lesionseg.networks import build_network, freeze_blocks, network_blocks
from lesionseg.training.loaders import train_loader
from lesionseg.training.engine import build_loss, evaluate, selection_dice
from lesionseg.training.fit import BEST, LAST, fit, load_checkpoint
from lesionseg.training.transforms import train_transforms

SHAPE = (16, 16, 8)


def _items(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = np.zeros(SHAPE, np.float32)
        if i % 4:  # every 4th case is a sham
            x, y = rng.integers(3, 9, size=2)
            label[x:x + 5, y:y + 5, 2:6] = 1
        image = rng.normal(0, 0.3, SHAPE).astype(np.float32) + 2 * label
        items.append({"case_id": f"c{i}", "image": image[None], "label": label[None], "affine": np.eye(4)})
    return items


def _model():
    torch.manual_seed(0)
    return build_network("unet", channels=(4, 8), strides=(2,), num_res_units=0)


class Recorder:
    def __init__(self):
        self.epochs, self.started, self.ended = [], None, None

    def on_fit_start(self, state, resumed):
        self.started = (state.epoch, resumed)

    def on_epoch_end(self, epoch, metrics, state):
        self.epochs.append((epoch, metrics))

    def on_fit_end(self, state):
        self.ended = state


class Crash(Exception):
    pass


class CrashAt(Recorder):
    def __init__(self, epoch):
        super().__init__()
        self.crash_epoch = epoch

    def on_epoch_end(self, epoch, metrics, state):
        super().on_epoch_end(epoch, metrics, state)
        if epoch == self.crash_epoch:
            raise Crash()


def _loader(items, config, transform=None):
    return train_loader(items, transform or train_transforms(None), config.batch_size, config.seed,
                        iterations=config.iterations_per_epoch, lesion_fraction=config.lesion_fraction)


def _fit(tmp_path, config, callbacks=(), resume=False, n_train=6):
    torch.set_num_threads(1)
    model = _model()
    loader = _loader(_items(n_train), config)
    state = fit(model, build_loss(config.loss), loader, _items(3, seed=1), config, tmp_path, roi_size=SHAPE,
                callbacks=callbacks, resume=resume, progress=False)
    return model, state


def test_fit_writes_checkpoints_and_reports_every_epoch(tmp_path):
    recorder = Recorder()
    _, state = _fit(tmp_path, TrainConfig(epochs=2, iterations_per_epoch=2, lr=1e-2), [recorder])
    assert [e for e, _ in recorder.epochs] == [1, 2]
    assert set(recorder.epochs[0][1]) >= {"train_loss", "val_dice", "lr"}
    assert recorder.started == (0, False) and recorder.ended is state
    assert (tmp_path / LAST).exists() and (tmp_path / BEST).exists()
    saved = load_checkpoint(tmp_path / LAST)
    assert saved["state"]["epoch"] == 2 and len(saved["state"]["history"]) == 2
    assert load_checkpoint(tmp_path / BEST)["epoch"] == state.best_epoch


def test_resume_after_crash_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    config = TrainConfig(epochs=3, iterations_per_epoch=2, lr=1e-2, seed=3)
    full_model, full_state = _fit(tmp_path / "full", config)
    with pytest.raises(Crash):
        _fit(tmp_path / "crashed", config, [CrashAt(2)])
    recorder = Recorder()
    resumed_model, resumed_state = _fit(tmp_path / "crashed", config, [recorder], resume=True)
    assert recorder.started == (2, True)
    assert [e for e, _ in recorder.epochs] == [3]
    assert [h["epoch"] for h in resumed_state.history] == [1, 2, 3]
    for (name, a), (_, b) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_early_stopping_counts_patience_in_steps(tmp_path):
    # lr ~ 0: val Dice never improves after epoch 1 (step 3); patience 6 steps stops at epoch 3 (step 9)
    torch.set_num_threads(1)
    config = TrainConfig(epochs=10, iterations_per_epoch=3, lr=1e-12, patience_steps=6)
    state = fit(_model(), build_loss("dice"), _loader(_items(4), config), _items(2), config, tmp_path,
                roi_size=SHAPE, progress=False)
    assert state.stopped_early and (state.epoch, state.step) == (3, 9) and state.best_step == 3
    assert state.converged, "stopped on patience, best step early in the budget"


def test_without_patience_a_run_takes_the_whole_budget_and_keeps_its_best(tmp_path):
    # the same flat curve as above: with patience_steps None (the default, as nnU-Net) nothing stops it early
    torch.set_num_threads(1)
    config = TrainConfig(epochs=5, iterations_per_epoch=3, lr=1e-12)
    assert config.patience_steps is None
    state = fit(_model(), build_loss("dice"), _loader(_items(4), config), _items(2), config, tmp_path,
                roi_size=SHAPE, progress=False)
    assert not state.stopped_early and (state.epoch, state.step) == (5, 15) and state.best_step == 3


@pytest.mark.parametrize("n_train", [2, 4])
def test_every_sample_size_gets_the_same_number_of_steps(tmp_path, n_train):
    config = TrainConfig(epochs=3, iterations_per_epoch=4, lr=1e-2, patience_steps=100)
    _, state = _fit(tmp_path, config, n_train=n_train)
    assert state.step == config.budget_steps == 12
    assert [h["step"] for h in state.history] == [4, 8, 12]


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_draws_hold_a_lesion_at_lesion_fraction_not_at_the_pools_share(fraction):
    items = _items(8)  # cases 0 and 4 are shams: 75% of the pool holds a lesion, so uniform draws give 0.75
    loader = _loader(items, TrainConfig(iterations_per_epoch=200, batch_size=2, lesion_fraction=fraction))
    drawn = torch.cat([b["label"].flatten(1).amax(1) for b in loader])
    # 400 draws: binomial sd <= 0.025, so +-0.08 is over 3 sd from the target and 0.75 lies outside both bands
    assert len(drawn) == 400 and abs(float(drawn.mean()) - fraction) < 0.08


def test_poly_schedule_decays_to_zero_over_the_budget(tmp_path):
    config = TrainConfig(epochs=4, iterations_per_epoch=2, lr=1e-2, patience_steps=100)
    _, state = _fit(tmp_path, config)
    lrs = [h["lr"] for h in state.history]
    assert lrs[0] == pytest.approx(1e-2) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(1e-2 * (1 - 6 / 8) ** 0.9)


@pytest.mark.parametrize("history, stopped, expected", [
    ([0.1, 0.5, 0.8, 0.795], False, True),   # last quarter gains < 0.01: plateau
    ([0.1, 0.3, 0.5, 0.7], False, False),    # best at the very end, still rising by 0.2
    ([0.1, 0.5, 0.8, 0.808], False, True),   # best at the very end, creeping up by 0.008: plateau
    ([0.1, 0.5, 0.8, 0.812], False, False),  # gained 0.012 in the last quarter: still rising
    ([0.6, 0.5, 0.5], True, True),           # early stopped on patience
    ([0.7], False, False),                   # one validation: no plateau to see
    ([], False, False),
])
def test_convergence_rule(history, stopped, expected):
    from lesionseg.training.fit import converged

    rows = [{"val_dice": v} for v in history]
    assert converged(rows, stopped) is expected


def test_deep_supervision_output_trains(tmp_path):
    torch.set_num_threads(1)
    model = build_network("dynunet", filters=(4, 8, 16))
    config = TrainConfig(epochs=1, iterations_per_epoch=1, loss="dicece")
    state = fit(model, build_loss("dicece"), _loader(_items(2), config), _items(1), config, tmp_path,
                roi_size=SHAPE, progress=False)
    assert np.isfinite(state.history[0]["train_loss"])


def test_frozen_blocks_stay_put_through_fit(tmp_path):
    torch.set_num_threads(1)
    model = _model()
    frozen = freeze_blocks(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, iterations_per_epoch=2, lr=1e-2)
    fit(model, build_loss("dice"), _loader(_items(4), config), _items(2), config, tmp_path, roi_size=SHAPE,
        progress=False)
    after = model.state_dict(keep_vars=True)
    blocks = dict(network_blocks(model))
    frozen_tensors = {id(t) for name in frozen for t in blocks[name].state_dict(keep_vars=True).values()}
    frozen_keys = {k for k, t in after.items() if id(t) in frozen_tensors}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert frozen_keys and changed, "some tensors are frozen and some train"
    assert not changed & frozen_keys
    assert any("running_mean" in k for k in frozen_keys), "BatchNorm statistics are part of the frozen block"


def test_augmented_loader_is_repeatable():
    transform = train_transforms(AugmentConfig(flip_prob=1.0, noise_prob=1.0))
    draws = []
    for _ in range(2):
        loader = _loader(_items(4), TrainConfig(iterations_per_epoch=2, seed=5), transform)
        from lesionseg.training.engine import seed_epoch

        seed_epoch(5, 1, loader)
        draws.append(torch.cat([b["image"] for b in loader]))
    assert torch.equal(draws[0], draws[1])


def test_selection_dice_scores_shams():
    empty = np.zeros((4, 4, 4), bool)
    blob = empty.copy()
    blob[1:3, 1:3, 1:3] = True
    assert selection_dice(empty, empty) == 1.0
    assert selection_dice(blob, empty) == 0.0
    assert selection_dice(blob, blob) == 1.0


def test_evaluate_perfect_predictor():
    class Oracle(torch.nn.Module):
        def forward(self, x):  # lesion logit high where the image is bright
            return torch.cat([-x + 1.0, x - 1.0], dim=1)

    items = _items(3)
    for it in items:
        it["image"] = it["label"] * 4.0
    assert evaluate(Oracle(), items, SHAPE, torch.device("cpu"))["val_dice"] == pytest.approx(1.0)


def test_non_terminal_progress_prints_one_line_per_epoch(tmp_path, capsys):
    config = TrainConfig(epochs=3, iterations_per_epoch=2, lr=1e-2, patience_steps=100)
    torch.set_num_threads(1)
    fit(_model(), build_loss("dicece"), _loader(_items(4), config), _items(2), config, tmp_path, roi_size=SHAPE,
        progress=True)
    captured = capsys.readouterr()  # pytest's captured streams are not terminals
    lines = captured.out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3 step 2 ") and "val_dice" in lines[0]
    assert "\r" not in captured.out + captured.err


def test_the_same_seed_gives_the_same_weights(tmp_path):
    config = TrainConfig(epochs=2, iterations_per_epoch=3, lr=1e-2, seed=7)
    first, _ = _fit(tmp_path / "a", config)
    second, _ = _fit(tmp_path / "b", config)
    other, _ = _fit(tmp_path / "c", TrainConfig(epochs=2, iterations_per_epoch=3, lr=1e-2, seed=8))
    pairs = list(zip(first.state_dict().values(), second.state_dict().values(), other.state_dict().values()))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs), "another seed trains differently"


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_cpu_is_bf16_where_native_and_plain_fp32_elsewhere(tmp_path, monkeypatch, native):
    from lesionseg.training import precision

    monkeypatch.setattr(precision, "_native_bf16_here", lambda: native)
    amp, _ = _fit(tmp_path / "amp", TrainConfig(epochs=1, iterations_per_epoch=2, lr=1e-2, amp=True))
    fp32, state = _fit(tmp_path / "fp32", TrainConfig(epochs=1, iterations_per_epoch=2, lr=1e-2, amp=False))
    same = all(torch.equal(a, b) for a, b in zip(amp.state_dict().values(), fp32.state_dict().values()))
    assert same is not native, "bf16 changes the arithmetic; without native bf16, amp must be exactly fp32"
    assert state.history[0]["val_seconds"] >= 0
