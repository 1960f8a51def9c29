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
