"""Mixed precision: bf16 only on CPUs with native bf16, fp32 elsewhere, fp16 on CUDA; train.amp governs all."""
import pytest
import torch

from lesionseg.training import precision
from lesionseg.training.engine import evaluate
from lesionseg.training.precision import BF16, FP16, FP32, autocast_context, cpu_flags, cpu_has_native_bf16

EPYC = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n"
AVX2_ONLY = "flags\t\t: fpu sse avx2 fma\n"
ARM = "Features\t: fp asimd bf16\n"


def test_cpu_flags_read_from_cpuinfo_text():
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(EPYC)
    assert cpu_flags("") == set()


@pytest.mark.parametrize("text, capability, expected", [
    (EPYC, "AVX512", True),
    (SAPPHIRE, "AVX512", True),
    (AVX2_ONLY, "AVX2", False),
    (EPYC, "AVX2", False),  # a build without AVX-512 kernels cannot use the CPU's bf16 instructions
    (AVX2_ONLY, "AVX512", False),
    (ARM, "DEFAULT", False),
])
def test_native_bf16_detection(text, capability, expected):
    assert cpu_has_native_bf16(cpu_flags(text), capability) is expected


def test_bf16_on_a_cpu_that_has_it(monkeypatch):
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: True)
    assert precision.resolve_precision("cpu", amp=True) == BF16
    assert precision.resolve_precision("cpu", amp=False) == FP32
    conv = torch.nn.Conv3d(1, 2, 3)
    with autocast_context("cpu", amp=True):
        assert conv(torch.randn(1, 1, 5, 5, 5)).dtype == torch.bfloat16


def test_fp32_fallback_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: False)
    assert precision.resolve_precision("cpu", amp=True) == FP32
    conv = torch.nn.Conv3d(1, 2, 3)
    with autocast_context("cpu", amp=True):
        assert conv(torch.randn(1, 1, 5, 5, 5)).dtype == torch.float32


def test_cuda_gets_fp16_whatever_the_cpu():
    assert precision.resolve_precision("cuda", amp=True) == FP16
    assert precision.resolve_precision("cuda", amp=False) == FP32


@pytest.mark.parametrize("native", [True, False])
def test_validation_runs_in_inference_mode_on_either_path(monkeypatch, native):
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: native)
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["inference_mode"] = torch.is_inference_mode_enabled()
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            return torch.cat([-x, x], dim=1)

    image = torch.zeros(1, 8, 8, 8)
    image[0, 2:5, 2:5, 2:5] = 1.0
    items = [{"image": image.numpy(), "label": image.numpy()}]
    assert evaluate(Probe(), items, [8, 8, 8], torch.device("cpu"), amp=True)["val_dice"] == pytest.approx(1.0)
    assert seen == {"inference_mode": True, "autocast": native}


def _trained_tiny_model():
    """A 4-filter RatLesNetV2 fitted for a few steps to find a bright cube (its masks are not trivial)."""
    from lesionseg.networks import build_network
    from lesionseg.training.engine import build_loss

    torch.manual_seed(0)
    model = build_network("ratlesnetv2", filters=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = build_loss("dicece")
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        image = torch.randn(2, 1, 16, 16, 16, generator=generator) * 0.3
        label = torch.zeros(2, 1, 16, 16, 16)
        for b in range(2):
            x, y, z = torch.randint(1, 8, (3,), generator=generator).tolist()
            image[b, 0, x:x + 6, y:y + 6, z:z + 6] += 1.5
            label[b, 0, x:x + 6, y:y + 6, z:z + 6] = 1
        optimizer.zero_grad()
        output = model(image)
        if output.dim() == image.dim() + 1:
            output = list(torch.unbind(output, dim=1))
        loss_fn(output, label).backward()
        optimizer.step()
    image = torch.randn(16, 24, 16, generator=generator) * 0.3
    image[3:10, 5:14, 4:11] += 1.5
    return model.eval(), image.numpy()


def test_evaluation_in_bf16_agrees_with_fp32_and_amp_off_is_the_fp32_path_bit_for_bit(monkeypatch):
    """Test predictions take validation's path: bf16 (forced here, emulated where the CPU lacks it) changes at
    most 1% of the voxels of a tiny trained model's mask; amp=False is exactly what inference computed before."""
    from monai.inferers import sliding_window_inference

    from lesionseg.inference import predict_mask
    from lesionseg.training.engine import predict_volume

    model, image = _trained_tiny_model()
    roi = [16, 16, 16]  # the image is larger in y: two windows, blended
    monkeypatch.setattr(precision, "_native_bf16_here", lambda: True)
    fp32, bf16 = predict_mask(model, image, roi, amp=False), predict_mask(model, image, roi, amp=True)
    assert 0 < fp32.sum() < fp32.size, "a trivial mask would agree on every voxel"
    assert (fp32 == bf16).mean() >= 0.99
    tensor = torch.as_tensor(image)[None, None]
    with torch.no_grad():  # inference before train.amp reached evaluation: plain fp32 sliding windows
        before = torch.softmax(sliding_window_inference(tensor, roi, 2, model, overlap=0.25, mode="gaussian"), dim=1)
    assert torch.equal(predict_volume(model, tensor, roi, torch.device("cpu"), amp=False), before[:, 1])
    assert torch.equal(predict_volume(model, tensor, roi, torch.device("cpu")), before[:, 1])
    assert (predict_mask(model, image, roi) == (before[0, 1] > 0.5).numpy()).all()


@pytest.mark.parametrize("native", [True, False])
def test_test_predictions_run_in_inference_mode_with_the_training_precision(monkeypatch, native):
    from lesionseg.inference import predict_mask

    monkeypatch.setattr(precision, "_native_bf16_here", lambda: native)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu")))
            return torch.cat([-x, x], dim=1)

    predict_mask(Probe(), torch.zeros(8, 8, 8).numpy(), [8, 8, 8], amp=True)
    predict_mask(Probe(), torch.zeros(8, 8, 8).numpy(), [8, 8, 8], amp=False)
    assert seen == [(True, native), (True, False)]


def test_the_evaluate_stage_hands_train_amp_to_every_models_segmenter(tmp_path, monkeypatch):
    from lesionseg.data.io import write_json
    from lesionseg.inference import Segmenter
    from lesionseg.layout import Layout
    from lesionseg.tracking import scores

    seen = []
    monkeypatch.setattr(scores.Segmenter, "from_file",
                        classmethod(lambda cls, path: Segmenter(torch.nn.Identity(), [8, 8, 8], {})))
    monkeypatch.setattr(scores, "predict_cases", lambda segmenter, raw_dir, ids, out: seen.append(segmenter.amp) or out)
    monkeypatch.setattr(scores, "evaluate_folder", lambda *a, **k: (None, dict.fromkeys(scores.HEADLINE, 0.0)))
    monkeypatch.setattr(scores, "log_test_results", lambda *a, **k: {})
    write_json(tmp_path / "m" / "run.json", {"best_val_dice": 0.5})
    for amp in (True, False):
        scores.evaluate_and_log([("m", tmp_path / "m")], tmp_path, [], Layout.at(tmp_path), amp=amp)
    assert seen == [True, False]
