"""Does Lab 3's PT2E recipe, lowered by torch.compile to int8 kernels, compute what
convert_pt2e's fp32 simulation promises (benchmarks/pt2e_saturation.py)?"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from pt2e_saturation import Adversarial, gap  # noqa: E402

from helpers.quant import cpu_has_vnni, torchao_status  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torchao_status().available, reason="torchao is missing (Lab 3 skips PT2E then)"
)


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(0)
    calib = [torch.rand(16, 3, 32, 32, generator=generator) for _ in range(2)]
    return calib, torch.rand(32, 3, 32, 32, generator=generator)


def test_seven_bit_activations_compile_to_what_the_simulation_computes(images):
    """With Lab 3's 7-bit activations, do the compiled int8 kernels agree with the simulation
    on a layer built to saturate 16-bit pair sums (to rounding: well under 1% of the logits)?"""
    torch.manual_seed(0)
    relative, agree, _ = gap(Adversarial().eval(), *images, reduce_range=True)
    assert relative < 0.01 and agree == 1.0


def test_eight_bit_activations_saturate_only_without_vnni(images):
    """With the quantizer's default 8-bit activations, is the compiled model off by far more
    than rounding exactly where section 2.1 says (a CPU without VNNI), and close on one with
    it?"""
    vnni = cpu_has_vnni()
    if vnni is None:
        pytest.skip("this PyTorch cannot tell whether the CPU has VNNI")
    torch.manual_seed(0)
    relative, _, _ = gap(Adversarial().eval(), *images, reduce_range=False)
    if not vnni:
        assert relative > 0.05, f"no saturation without VNNI: {relative:.2%}"
    else:
        assert relative < 0.01, f"a gap with VNNI: {relative:.2%}"
