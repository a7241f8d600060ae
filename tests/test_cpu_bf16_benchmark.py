"""benchmarks/cpu_bf16.py: does it time both code paths of helpers.train, in turns, and print
the table its docs copy?"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import cpu_bf16  # noqa: E402
import torch  # noqa: E402


def test_it_times_fp32_and_bf16_in_turns_through_helpers_train(monkeypatch, capsys):
    """Every timed call goes through helpers.train's train or evaluate with the mode's
    cpu_bf16 flag, the two modes alternating, one warm-up each; the printed speed-up is the
    ratio of the printed medians."""
    calls: list[tuple[str, bool]] = []
    real_train, real_evaluate = cpu_bf16.train, cpu_bf16.evaluate

    def spy_train(*args, **kwargs):
        calls.append(("train", kwargs["cpu_bf16"]))
        assert kwargs["max_steps"] == 1
        return real_train(*args, **kwargs)

    def spy_evaluate(*args, **kwargs):
        calls.append(("evaluate", kwargs["cpu_bf16"]))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(cpu_bf16, "train", spy_train)
    monkeypatch.setattr(cpu_bf16, "evaluate", spy_evaluate)
    argv = ["--arch", "small", "--batch-size", "8", "--repeats", "2", "--eval-images", "16"]
    threads = torch.get_num_threads()
    try:
        assert cpu_bf16.main(argv + ["--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # main sets it for the whole process
    fp32, bf16 = ("train", False), ("train", True)  # warm-up, then rounds in rotated order
    assert calls[:6] == [fp32, bf16, fp32, bf16, bf16, fp32]
    fp32, bf16 = ("evaluate", False), ("evaluate", True)
    assert calls[6:] == [fp32, bf16, fp32, bf16, bf16, fp32]
    out = capsys.readouterr().out
    rows = re.findall(
        r"^\| (training step, batch 8|evaluation, 16 images \(batch 256\)) "
        r"\| ([\d.]+) \(([\d.]+)-([\d.]+)\) \| (\d+) "
        r"\| ([\d.]+) \(([\d.]+)-([\d.]+)\) \| (\d+) \| ([\d.]+)x \|$",
        out,
        re.MULTILINE,
    )
    names = [row[0] for row in rows]
    assert names == ["training step, batch 8", "evaluation, 16 images (batch 256)"]
    for _, fp32, fp32_low, fp32_high, _, bf16, bf16_low, bf16_high, _, ratio in rows:
        assert float(fp32_low) <= float(fp32) <= float(fp32_high)
        assert float(bf16_low) <= float(bf16) <= float(bf16_high)
        assert abs(float(ratio) - float(fp32) / float(bf16)) < 0.01 + 0.01 * float(ratio)
    assert "bf16 in hardware" in out and "1 threads" in out
