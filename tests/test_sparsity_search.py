"""The automatic allocation of benchmarks/sparsity_search.py on small hand-made curves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from sparsity_search import (  # noqa: E402
    drop_curves,
    greedy_allocations,
    main,
    reference_sparsity_dict,
    torch_magnitude_prune,
)

from helpers.models import VGG  # noqa: E402
from helpers.profiles import VGG_ARCH  # noqa: E402
from helpers.pruning import sparse_model_size_ratio  # noqa: E402

SPARSITIES = [0.5, 0.7, 0.9]


def course_counts() -> tuple[torch.nn.Module, dict[str, int]]:
    with torch.device("meta"):
        model = VGG(VGG_ARCH)
    counts = {n: p.numel() for n, p in model.named_parameters() if p.dim() > 1}
    counts["__total__"] = sum(p.numel() for p in model.parameters())
    return model, counts


def test_drop_curves_interpolate_and_never_decrease():
    grid = np.round(np.arange(0.0, 0.91, 0.1), 4)
    # 90 at 0.5 (drop 2), 91 at 0.7 (noise: better than at 0.5), 50 at 0.9 (drop 42)
    curves = drop_curves(SPARSITIES, {"w": [90.0, 91.0, 50.0]}, 92.0, grid)
    assert np.isclose(curves["w"][2], 0.8)  # 0.2: linear from no drop at 0 to 2 at 0.5
    assert np.isclose(curves["w"][5], 2.0)  # 0.5
    assert np.isclose(curves["w"][7], 2.0)  # 0.7: 1 point, held at the earlier 2
    assert np.isclose(curves["w"][9], 42.0)  # 0.9
    assert np.all(np.diff(curves["w"]) >= 0)


def test_greedy_meets_each_target_and_prunes_robust_layers_first():
    model, counts = course_counts()
    names = [n for n in counts if n != "__total__"]
    # conv0 collapses at any sparsity; every other weight is free up to 0.9.
    accuracies = {n: [90.0, 90.0, 90.0] for n in names}
    accuracies["backbone.conv0.weight"] = [10.0, 10.0, 10.0]
    grid = np.round(np.arange(0.0, 0.9 + 1e-9, 0.05), 4)
    curves = drop_curves(SPARSITIES, accuracies, 90.0, grid)
    targets = [0.5, 0.3, 0.2]
    found = greedy_allocations(curves, grid, counts, targets)
    assert list(found) == sorted(targets, reverse=True)
    for target, allocation in found.items():
        # helpers' own size count (the one Lab 1 grades with) agrees that the target is met
        assert sparse_model_size_ratio(model, allocation) <= target
        assert allocation["backbone.conv0.weight"] == 0.0
    # a smaller target never lowers a weight's sparsity (one greedy path)
    for bigger, smaller in zip(targets, targets[1:], strict=False):
        assert all(found[smaller][n] >= found[bigger][n] for n in names)


def test_an_unreachable_target_is_left_out():
    _, counts = course_counts()
    names = [n for n in counts if n != "__total__"]
    grid = np.round(np.arange(0.0, 0.5 + 1e-9, 0.05), 4)
    curves = drop_curves([0.5], {n: [90.0] for n in names}, 90.0, grid)
    found = greedy_allocations(curves, grid, counts, [0.6, 0.01])
    assert list(found) == [0.6]  # at most half of each weight can go: 1% is out of reach


def test_pytorch_mask_and_reference_dict():
    weight = torch.tensor([[0.1, -0.5], [0.3, -0.2]])
    assert torch.equal(torch_magnitude_prune(weight, 0.5), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(torch_magnitude_prune(weight, 0.0), torch.ones(2, 2))
    reference = reference_sparsity_dict()
    _, counts = course_counts()
    assert set(reference) == {n for n in counts if n != "__total__"}


def _table(out: str) -> list[str]:
    """The final table's rows without the wall-time column (read back: "(read back)")."""
    start = out.index("## Fine-tuned with the masks kept")
    return [row.rsplit("|", 2)[0] for row in out[start:].splitlines() if row.startswith("| ")]


@pytest.mark.usefixtures("lab_data")
def test_a_second_run_reads_the_finished_parts_back(tmp_path, capsys, monkeypatch):
    """Does the same command, run again, reuse the scan and every fine-tuned candidate (the
    way a 5-epoch-per-candidate search fits several sessions), print the same table, and
    refuse a saved file it cannot trust rather than overwrite it?"""
    import helpers.pruning

    out_dir = tmp_path / "runs"
    argv = ["--profile", "smoke", "--out-dir", str(out_dir), "--targets", "0.25", "0.15"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    (saved,) = out_dir.glob("smoke-*.json")
    state = json.loads(saved.read_text())
    assert len(state["candidates"]) == 3  # the reference and two greedy allocations

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed a finished part")

    monkeypatch.setattr(helpers.pruning, "fine_tune", must_not_run)
    monkeypatch.setattr(helpers.pruning, "sensitivity_scan", must_not_run)
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "sensitivity scan read back from" in second
    assert second.count("% (read back)\n") == 3  # one line per candidate
    assert _table(second) == _table(first) and len(_table(first)) == 1 + 3  # header, rows

    # --report prints what is saved and fine-tunes nothing, not even a new allocation
    assert main([*argv, "0.5", "--report"]) == 0
    report = capsys.readouterr().out
    fine_tuned = [row.split(" | ")[4] for row in _table(first)[1:]]  # reference, 25%, 15%
    expected = [fine_tuned[0], "not run", *fine_tuned[1:]]  # 50%, the largest target, first
    assert [row.split(" | ")[4] for row in _table(report)[1:]] == expected
    assert "1 allocation(s) not fine-tuned yet" in report
    with pytest.raises(SystemExit, match="nothing saved yet .* without --report first"):
        main([*argv, "--seed", "2", "--report"])

    # a candidate's result does not depend on what was fine-tuned before it: alone after
    # the reference, the 15% allocation ends where it ended third, after 25%
    monkeypatch.undo()
    alone = ["--profile", "smoke", "--out-dir", str(tmp_path / "alone"), "--targets", "0.15"]
    assert main(alone) == 0
    assert _table(capsys.readouterr().out)[-1] == _table(first)[-1]

    # another setting is a file of its own; a damaged or foreign file is an error, kept
    assert main([*argv, "--seed", "1", "--targets", "0.5"]) == 0
    assert len(list(out_dir.glob("smoke-*.json"))) == 2
    saved.write_text(saved.read_text()[:100])
    with pytest.raises(SystemExit, match="cannot read the saved run .*move it away"):
        main(argv)
    state["config"]["epochs"] = 99
    saved.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match="holds a run with other settings"):
        main(argv)
    assert json.loads(saved.read_text())["config"]["epochs"] == 99
