"""Tests of helpers/pruning.py against small oracles (no dataset, no checkpoint)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.metrics import get_model_size
from helpers.models import VGG
from helpers.profiles import SMALL_VGG_ARCH, VGG_ARCH
from helpers.pruning import (
    FineGrainedPruner,
    fine_tune,
    random_vgg,
    sensitivity_scan,
    sorting_failure,
    sparse_model_size_ratio,
)
from helpers.train import evaluate, train

TINY_ARCH = (8, "M", 12, "M", 16)


def topk_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Oracle pruning by sorting: keep the numel - round(numel * sparsity) largest |w|."""
    num_keep = tensor.numel() - round(tensor.numel() * sparsity)
    mask = torch.zeros(tensor.numel(), dtype=torch.bool, device=tensor.device)
    mask[tensor.abs().flatten().argsort(descending=True)[:num_keep]] = True
    mask = mask.view_as(tensor)
    tensor.mul_(mask)
    return mask


def mask_only_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Like ``topk_prune`` but leaves the tensor untouched (a student forgetting in-place)."""
    return topk_prune(tensor.clone(), sparsity)


def batches(num_batches: int = 2, batch_size: int = 8, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(batch_size, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(num_batches)
    ]


def weight_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.dim() > 1]


def test_random_vgg_is_seeded_and_leaves_global_rng_alone():
    """Does random_vgg give the same model for a seed, a new one for another, and no RNG drift?"""
    state = torch.random.get_rng_state()
    a, b, c = random_vgg(TINY_ARCH, seed=1), random_vgg(TINY_ARCH, seed=1), random_vgg(TINY_ARCH)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.backbone.conv0.weight, c.backbone.conv0.weight)
    assert not a.training
    bn = a.backbone.bn1
    for tensor, default in [
        (bn.weight, 1.0),
        (bn.bias, 0.0),
        (bn.running_mean, 0.0),
        (bn.running_var, 1.0),
    ]:
        assert not torch.allclose(tensor, torch.full_like(tensor, default))


def test_pruner_prunes_each_named_weight_to_its_sparsity():
    """Does FineGrainedPruner prune exactly the named weights, with bool masks it keeps?"""
    model = random_vgg(TINY_ARCH, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsity_dict = {"backbone.conv1.weight": 0.5, "classifier.weight": 0.75}
    pruner = FineGrainedPruner(model, sparsity_dict, topk_prune)
    assert set(pruner.masks) == set(sparsity_dict)
    params = dict(model.named_parameters())
    for name, sparsity in sparsity_dict.items():
        mask = pruner.masks[name]
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        numel = mask.numel()
        assert int(mask.sum()) == numel - round(numel * sparsity)
        assert torch.equal(params[name].detach(), before[name] * mask)
    for key, value in model.state_dict().items():
        if key not in sparsity_dict:
            assert torch.equal(value, before[key]), key


def test_pruner_applies_masks_even_if_prune_fn_is_not_in_place():
    """Is the model pruned when prune_fn only returns the mask?"""
    model = random_vgg(TINY_ARCH, seed=3)
    pruner = FineGrainedPruner(model, {"backbone.conv2.weight": 0.6}, mask_only_prune)
    weight = model.backbone.conv2.weight.detach()
    assert torch.equal(weight != 0, pruner.masks["backbone.conv2.weight"])


def test_pruner_apply_re_zeroes_after_updates():
    """Does apply() zero the pruned weights again after they were changed?"""
    model = random_vgg(TINY_ARCH, seed=4)
    pruner = FineGrainedPruner(model, {"backbone.conv1.weight": 0.7}, topk_prune)
    with torch.no_grad():
        model.backbone.conv1.weight.add_(1.0)
    pruner.apply(model)
    mask = pruner.masks["backbone.conv1.weight"]
    weight = model.backbone.conv1.weight.detach()
    assert torch.all(weight[~mask] == 0)
    assert torch.all(weight[mask] != 0)


def test_pruner_as_train_callback_keeps_weights_pruned():
    """Used as a train() callback, does the pruner keep pruned weights at zero?"""
    model = random_vgg(TINY_ARCH, seed=5).train()
    sparsity_dict = {name: 0.5 for name in weight_names(model)}
    pruner = FineGrainedPruner(model, sparsity_dict, topk_prune)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(
        model, batches(), nn.CrossEntropyLoss(), optimizer, callbacks=[lambda: pruner.apply(model)]
    )
    params = dict(model.named_parameters())
    for name, mask in pruner.masks.items():
        assert torch.all(params[name].detach()[~mask] == 0), name


@pytest.mark.parametrize(
    "sparsity_dict, error",
    [
        ({"backbone.conv9.weight": 0.5}, KeyError),
        ({"backbone.bn0.weight": 0.5}, ValueError),
        ({"backbone.conv0.weight": 1.5}, ValueError),
        ({"backbone.conv0.weight": "0.5"}, ValueError),
    ],
)
def test_pruner_rejects_bad_sparsity_dict(sparsity_dict, error):
    """Does a wrong name, a 1-D parameter or a bad sparsity raise a clear error?"""
    with pytest.raises(error):
        FineGrainedPruner(random_vgg(TINY_ARCH), sparsity_dict, topk_prune)


def test_pruner_rejects_wrong_mask_shape():
    """Does a prune_fn returning no mask (or a wrong shape) raise instead of silently passing?"""
    with pytest.raises(ValueError, match="mask"):
        FineGrainedPruner(random_vgg(TINY_ARCH), {"classifier.weight": 0.5}, lambda t, s: None)
    with pytest.raises(ValueError, match="mask"):
        FineGrainedPruner(
            random_vgg(TINY_ARCH), {"classifier.weight": 0.5}, lambda t, s: t.flatten() != 0
        )


def test_sensitivity_scan_matches_one_layer_at_a_time_oracle():
    """Does each scan point equal the accuracy of a copy with only that layer pruned?"""
    model = random_vgg(TINY_ARCH, seed=6)
    data = batches(num_batches=3, batch_size=16, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsities, accuracies = sensitivity_scan(
        model, data, topk_prune, (0.0, 0.5, 1.0), verbose=False
    )
    assert sparsities == [0.0, 0.5, 1.0]
    assert list(accuracies) == weight_names(model)
    dense_accuracy = evaluate(model, data, verbose=False)
    for name, row in accuracies.items():
        assert len(row) == 3
        assert row[0] == pytest.approx(dense_accuracy)
        for sparsity, accuracy in zip(sparsities, row, strict=True):
            pruned = random_vgg(TINY_ARCH, seed=6)
            topk_prune(dict(pruned.named_parameters())[name].detach(), sparsity)
            assert accuracy == pytest.approx(evaluate(pruned, data, verbose=False)), name
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} not restored"


def test_sensitivity_scan_applies_returned_mask_and_restores_on_error():
    """Does the scan use the returned mask, and restore the weight when prune_fn fails?"""
    model = random_vgg(TINY_ARCH, seed=7)
    data = batches(num_batches=1, batch_size=16)
    _, accuracies = sensitivity_scan(model, data, mask_only_prune, [1.0], verbose=False)
    zeroed = random_vgg(TINY_ARCH, seed=7)
    with torch.no_grad():
        zeroed.classifier.weight.zero_()
    assert accuracies["classifier.weight"][0] == pytest.approx(evaluate(zeroed, data, False))

    before = model.backbone.conv0.weight.detach().clone()

    def failing(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
        tensor.zero_()
        raise RuntimeError("student bug")

    with pytest.raises(RuntimeError, match="student bug"):
        sensitivity_scan(model, data, failing, [0.5], verbose=False)
    assert torch.equal(model.backbone.conv0.weight.detach(), before)


def test_fine_tune_on_a_loader_without_length_asks_for_steps_per_epoch():
    model = random_vgg(TINY_ARCH, seed=7)
    data = iter(batches(num_batches=2, batch_size=4))
    with pytest.raises(ValueError, match="train_loader has no length .* give steps_per_epoch"):
        fine_tune(model, data, [], num_epochs=1, verbose=False)


def test_a_prune_fn_that_returns_no_mask_is_named_in_the_scan_and_the_pruner():
    """A fine_grained_prune that prunes in place but forgets ``return mask``: do the scan and
    FineGrainedPruner both say so (the weight, its shape, what came back), and does the scan
    restore the weight it pruned?"""
    model = random_vgg(TINY_ARCH, seed=7)
    before = model.backbone.conv0.weight.detach().clone()

    def forgets_to_return(tensor: torch.Tensor, sparsity: float) -> None:
        tensor.mul_(tensor.abs() > tensor.abs().median())

    expected = r"prune_fn must return a mask shaped like backbone.conv0.weight \(8, 3, 3, 3\), got NoneType"
    data = batches(num_batches=1, batch_size=4)
    with pytest.raises(ValueError, match=expected):
        sensitivity_scan(model, data, forgets_to_return, [0.5], verbose=False)
    assert torch.equal(model.backbone.conv0.weight.detach(), before)
    with pytest.raises(ValueError, match=expected):
        FineGrainedPruner(model, {"backbone.conv0.weight": 0.5}, forgets_to_return)


@pytest.mark.parametrize("name", weight_names(random_vgg(SMALL_VGG_ARCH)))
def test_a_weight_pruned_to_one_cuts_the_network(name):
    """Is the output independent of the input once any one weight is pruned to 1.0?

    Lab 1's sparsity_dict question caps every sparsity at 0.95 and says why: at 1.0 no input
    reaches the output. Brute force on the small VGG, every weight in turn; pruned to 0.95
    instead, two inputs still give two outputs.
    """
    inputs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for sparsity, independent in ((1.0, True), (0.95, False)):
        model = random_vgg(SMALL_VGG_ARCH, seed=9).eval()
        FineGrainedPruner(model, {name: sparsity}, topk_prune)
        with torch.no_grad():
            first, second = model(inputs)
        assert torch.allclose(first, second, atol=1e-6) == independent, (name, sparsity)


def test_sensitivity_scan_prints_one_line_per_layer(capsys):
    model = random_vgg(TINY_ARCH)
    sensitivity_scan(model, batches(1), topk_prune, [0.5], verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(weight_names(model))
    assert "classifier.weight" in lines[-1]


@pytest.mark.parametrize("arch", [TINY_ARCH, SMALL_VGG_ARCH])
def test_size_ratio_equals_measured_size_after_pruning(arch):
    """Is the budget computed from shapes equal to the nonzero size of the pruned model?"""
    model = random_vgg(arch, seed=8)
    names = weight_names(model)
    sparsity_dict = {name: 0.1 * (i % 10) for i, name in enumerate(names)}
    expected_ratio = sparse_model_size_ratio(model, sparsity_dict)
    dense_bits = get_model_size(model)
    FineGrainedPruner(model, sparsity_dict, topk_prune)
    measured = get_model_size(model, count_nonzero_only=True) / dense_bits
    assert expected_ratio == pytest.approx(measured, abs=1e-12)


def test_size_ratio_on_meta_device_of_course_vgg():
    """Does the ratio need only shapes (meta device) and count BatchNorm and biases as dense?"""
    with torch.device("meta"):
        model = VGG(VGG_ARCH)
    total = sum(p.numel() for p in model.parameters())
    assert sparse_model_size_ratio(model, {}) == 1.0
    weights = {name: 1.0 for name in weight_names(model)}
    unpruned = sum(p.numel() for p in model.parameters() if p.dim() <= 1)
    assert sparse_model_size_ratio(model, weights) == pytest.approx(unpruned / total)
    conv7 = model.backbone.conv7.weight.numel()
    ratio = sparse_model_size_ratio(model, {"backbone.conv7.weight": 0.5})
    assert ratio == pytest.approx((total - round(conv7 * 0.5)) / total)
    with pytest.raises(KeyError):
        sparse_model_size_ratio(model, {"conv7.weight": 0.5})


def test_fine_tune_keeps_masks_and_counts_steps():
    """Does fine_tune run max steps per epoch, call callbacks each step, and report accuracy?"""
    model = random_vgg(TINY_ARCH, seed=9).train()
    pruner = FineGrainedPruner(model, {"backbone.conv1.weight": 0.8}, topk_prune)
    calls = []

    def callback() -> None:
        calls.append(1)
        pruner.apply(model)

    data = batches(num_batches=3, batch_size=8, seed=2)
    before = model.backbone.conv2.weight.detach().clone()
    history = fine_tune(
        model, data, data[:1], num_epochs=2, steps_per_epoch=2, callbacks=[callback], verbose=False
    )
    assert len(history) == 2 and all(0.0 <= a <= 100.0 for a in history)
    assert history[-1] == pytest.approx(evaluate(model, data[:1], verbose=False))
    assert len(calls) == 4
    mask = pruner.masks["backbone.conv1.weight"]
    assert torch.all(model.backbone.conv1.weight.detach()[~mask] == 0)
    assert not torch.equal(model.backbone.conv2.weight.detach(), before)
    fine_tune(model, data, data[:1], num_epochs=1, callbacks=[callback], verbose=False)
    assert len(calls) == 4 + len(data)  # steps_per_epoch=None: the whole loader


def test_lab1_mistakes_match_the_source_notebook():
    """Does every mistake in tests/lab1_mistakes.py apply to exactly one spot of its cell?"""
    import importlib.util
    import json

    from helpers.profiles import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "lab1_mistakes", REPO_ROOT / "tests" / "lab1_mistakes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    AUTOGRADED_POINTS, MISTAKES = module.AUTOGRADED_POINTS, module.MISTAKES
    notebook = json.loads((REPO_ROOT / module.SOURCE_NOTEBOOK).read_text())
    cells = {}
    points = {}
    for cell in notebook["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if "grade_id" in meta:
            cells[meta["grade_id"]] = "".join(cell["source"])
            if meta.get("grade") and cell["cell_type"] == "code":
                points[meta["grade_id"]] = meta["points"]
    assert points == AUTOGRADED_POINTS
    names = [m["name"] for m in MISTAKES]
    assert len(names) == len(set(names))
    for mistake in MISTAKES:
        for change in (mistake, *mistake.get("more", ())):
            assert change["grade_id"].endswith("_solution"), mistake["name"]
            assert cells[change["grade_id"]].count(change["old"]) == 1, mistake["name"]
        assert mistake["fails"] and mistake["fails"] <= set(AUTOGRADED_POINTS), mistake["name"]
        assert set(mistake.get("says", {})) <= mistake["fails"], mistake["name"]


def test_sorting_failure_blames_an_importance_of_the_wrong_shape_and_else_the_dimensions():
    """Lab 1's sorting tests explain a crash: an importance per OUTPUT channel (shape (c_out,))
    is named with both shapes; a right-shaped or a raising importance leaves the generic
    wrong-dimension hint (a raising one is its own test's to report)."""
    model = random_vgg(TINY_ARCH, seed=0)
    error = IndexError("index out of range in self")

    def per_output_channel(weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().flatten(1).norm(dim=1)

    def right(weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().transpose(0, 1).flatten(1).norm(dim=1)

    def unwritten(weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    message = str(sorting_failure(model, error, per_output_channel))
    assert message.startswith("get_input_channel_importance returned shape (12,) for conv1")
    assert "(12, 8, 3, 3)" in message and "(8,)" in message and "IndexError" in message
    for importance in (right, unwritten):
        message = str(sorting_failure(model, error, importance))
        assert message.startswith("apply_channel_sorting raised IndexError") and "dim 0" in message


class _PrecisionProbe(nn.Module):
    """Wraps a model; records, at every forward, whether CPU autocast to bf16 is on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[bool] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.seen.append(
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        )
        return self.model(inputs)


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_fine_tune_and_scan_pass_cpu_bf16_to_every_forward(cpu_bf16):
    """Do ``fine_tune`` and ``sensitivity_scan`` train and evaluate in bf16 autocast on the CPU
    exactly when asked (benchmarks/sparsity_search.py --cpu-bf16), and keep the masks then?"""
    probe = _PrecisionProbe(random_vgg(TINY_ARCH, seed=9)).train()
    pruner = FineGrainedPruner(probe, {"model.backbone.conv1.weight": 0.8}, topk_prune)
    data = batches(num_batches=2, batch_size=8, seed=2)
    fine_tune(
        probe,
        data,
        data[:1],
        num_epochs=1,
        callbacks=[lambda: pruner.apply(probe)],
        verbose=False,
        cpu_bf16=cpu_bf16,
    )
    assert probe.seen == [cpu_bf16] * 3  # two training steps, one evaluation
    assert probe.model.backbone.conv1.weight.dtype == torch.float32
    mask = pruner.masks["model.backbone.conv1.weight"]
    assert torch.all(probe.model.backbone.conv1.weight.detach()[~mask] == 0)
    probe.seen.clear()
    sensitivity_scan(probe, data[:1], topk_prune, [0.5], verbose=False, cpu_bf16=cpu_bf16)
    assert probe.seen == [cpu_bf16] * len(weight_names(probe))
