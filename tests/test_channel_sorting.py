"""benchmarks/channel_sorting.py: BatchNorm recalibration, kept norm, the lab's own functions."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from channel_sorting import SOLUTION_CELLS, kept_norm_share, recalibrate_batchnorm  # noqa: E402
from lab_results import solution_namespace  # noqa: E402

from helpers.models import VGG  # noqa: E402
from helpers.profiles import SMALL_VGG_ARCH  # noqa: E402


def test_recalibration_gives_the_statistics_of_the_batches_and_changes_no_weight():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.BatchNorm2d(4, momentum=0.3)).eval()
    net[1].running_mean.fill_(5.0)  # stale statistics
    net[1].running_var.fill_(9.0)
    batches = [torch.randn(8, 3, 6, 6) * (i + 1) for i in range(3)]  # equal sizes
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k}

    recalibrate_batchnorm(net, batches)

    with torch.no_grad():
        outs = [conv(b) for b in batches]
    # the mean of the per-batch means and of the per-batch unbiased variances (what a
    # cumulative BatchNorm average holds), computed directly
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.transpose(0, 1).flatten(1).var(dim=1) for o in outs]).mean(0)
    assert torch.allclose(net[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, var, rtol=1e-4)
    assert net[1].momentum == 0.3 and not net.training
    for k, v in weights.items():
        if k != "1.num_batches_tracked":
            assert torch.equal(net.state_dict()[k], v), k


def test_kept_norm_share_against_a_hand_count():
    torch.manual_seed(0)
    model = VGG(SMALL_VGG_ARCH)
    assert kept_norm_share(model, model) == pytest.approx(1.0)
    pruned = copy.deepcopy(model)
    convs = [m for m in model.backbone if isinstance(m, nn.Conv2d)]
    kept = [m for m in pruned.backbone if isinstance(m, nn.Conv2d)]
    kept[1].weight = nn.Parameter(kept[1].weight.detach()[:, :2].clone())  # conv1: 2 inputs
    total = sum(float((c.weight.detach() ** 2).sum()) for c in convs[1:])
    removed = float((convs[1].weight.detach()[:, 2:] ** 2).sum())
    assert kept_norm_share(model, pruned) == pytest.approx((total - removed) / total)


def test_the_solution_functions_prune_and_sort_the_small_vgg():
    lab = solution_namespace(
        "lab1_pruning", SOLUTION_CELLS, {"torch": torch, "nn": nn, "copy": copy}
    )
    torch.manual_seed(0)
    model = VGG(SMALL_VGG_ARCH).eval()
    x = torch.randn(2, 3, 32, 32)
    sorted_model = lab["apply_channel_sorting"](model)
    assert torch.allclose(sorted_model(x), model(x), atol=1e-4)  # same function
    pruned = lab["channel_prune"](sorted_model, 0.5)
    widths = [m.out_channels for m in pruned.backbone if isinstance(m, nn.Conv2d)]
    original = [m.out_channels for m in model.backbone if isinstance(m, nn.Conv2d)]
    assert widths[:-1] == [round(c / 2) for c in original[:-1]] and widths[-1] == original[-1]
    # sorted first, the kept inputs carry at least the share that keeping the first ones does
    assert kept_norm_share(sorted_model, pruned) >= kept_norm_share(
        model, lab["channel_prune"](model, 0.5)
    )


def test_a_missing_solution_cell_is_named():
    with pytest.raises(SystemExit, match="no cell 'no_such_cell'"):
        solution_namespace("lab1_pruning", ["no_such_cell"])
