"""Does the latency measurement return sane statistics and leave torch and the model as found?"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from helpers.latency import LatencyResult, compare_latency, measure_latency


class Recorder(nn.Module):
    """A tiny model that logs each call and the mode it was called in."""

    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))

    def forward(self, x):
        self.log.append((self.name, self.training, torch.is_inference_mode_enabled(), x.device))
        return self.body(x)


@pytest.fixture
def threads():
    """Restore torch's thread count whatever a test does."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_statistics_are_ordered_and_finite(threads):
    """Are the numbers finite, positive and min <= q1 <= median <= q3?"""
    result = measure_latency(Recorder("m", []), torch.randn(4, 8), n_warmup=2, n_test=25)
    values = (result.min_ms, result.q1_ms, result.median_ms, result.q3_ms)
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert result.min_ms <= result.q1_ms <= result.median_ms <= result.q3_ms
    assert result.n == 25 == len(result.samples_ms)
    assert result.device == "cpu"
    assert result.num_threads == threads


def test_model_runs_in_eval_and_inference_mode_then_is_restored(threads):
    """Is every call made in eval + inference mode, and are the training flags put back?"""
    log: list = []
    model = Recorder("m", log).train()
    model.body[2].eval()  # a mixed state must survive
    measure_latency(model, torch.randn(2, 8), n_warmup=3, n_test=5)
    assert len(log) == 8
    assert all(not training and inference for _, training, inference, _ in log)
    assert model.training and model.body[0].training and not model.body[2].training


def test_threads_are_set_and_restored(threads):
    """Does num_threads apply during the measurement only?"""
    torch.set_num_threads(2)
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x * 2

    result = measure_latency(Probe(), torch.randn(3), n_warmup=1, n_test=3, num_threads=1)
    assert seen == [1, 1, 1, 1]
    assert result.num_threads == 1
    assert torch.get_num_threads() == 2


def test_state_is_restored_when_the_model_fails(threads):
    """If the forward pass raises, are threads and training mode still restored?"""
    torch.set_num_threads(2)

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(model, torch.randn(2), num_threads=1)
    assert torch.get_num_threads() == 2
    assert model.training


def test_text_reads_like_the_docs():
    """Does str() give the median, IQR and sample count in ms?"""
    result = LatencyResult(12.34, 11.94, 12.81, 11.0, 100, "cpu", 2)
    assert str(result) == "12.3 ms (IQR 11.9-12.8 ms, n=100)"
    fast = LatencyResult(0.4567, 0.4321, 0.5011, 0.4, 50, "cuda:0", 1)
    assert re.fullmatch(r"0\.457 ms \(IQR 0\.432-0\.501 ms, n=50\)", str(fast))


def test_bad_counts_are_refused():
    """Is n_test=0 refused instead of returning NaNs?"""
    with pytest.raises(ValueError, match="n_test"):
        measure_latency(nn.Identity(), torch.randn(2), n_test=0)


def test_compare_times_models_in_turns(threads):
    """Are the models interleaved, each starting a round in turn, with one result each?"""
    log: list = []
    models = {"a": Recorder("a", log), "b": Recorder("b", log), "c": Recorder("c", log)}
    results = compare_latency(models, torch.randn(2, 8), n_warmup=1, n_test=6, num_threads=1)
    assert list(results) == ["a", "b", "c"]
    assert all(r.n == 6 and r.num_threads == 1 and r.median_ms > 0 for r in results.values())
    names = [name for name, *_ in log]
    assert names[:3] == ["a", "b", "c"]  # warm-up round
    rounds = [names[i : i + 3] for i in range(3, len(names), 3)]
    assert len(rounds) == 6
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]
    assert torch.get_num_threads() == threads


def test_compare_restores_training_flags(threads):
    """Does compare_latency put every model back in the mode it had?"""
    log: list = []
    trained, frozen = Recorder("t", log).train(), Recorder("f", log).eval()
    compare_latency({"t": trained, "f": frozen}, torch.randn(1, 8), n_warmup=0, n_test=2)
    assert trained.training and not frozen.training
    assert all(not training for _, training, _, _ in log)


def test_an_exported_module_is_timed_and_evaluated_as_it_was_exported(threads):
    """A module from ``torch.export`` refuses ``eval()`` (torchao's
    ``allow_exported_model_train_eval`` was not applied): do ``measure_latency`` and
    ``evaluate`` still run it, with the outputs of the eval-mode model it was exported from?"""
    from helpers.train import evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))
    model.eval()
    x = torch.randn(6, 8)
    exported = torch.export.export(model, (x,)).module()
    with pytest.raises(NotImplementedError):
        exported.eval()  # the reason for the helpers' care
    assert measure_latency(exported, x, n_warmup=1, n_test=3).n == 3
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    assert evaluate(exported, [(x, labels)], verbose=False) == 100.0
    assert evaluate(exported, [(x, (labels + 1) % 3)], verbose=False) == 0.0
