"""Provided pruning machinery for Lab 1. It never holds a solution.

Every function that prunes takes the student's ``fine_grained_prune`` as an argument
(``prune_fn``), so a mistake in it shows up here exactly as it would in the student's code.

- ``FineGrainedPruner`` prunes chosen weights once and re-applies the masks after every
  optimizer step while fine-tuning, so pruned weights stay zero.
- ``sensitivity_scan`` prunes one layer at a time to several sparsities and records the
  accuracy, restoring the weights after each point.
- ``sparse_model_size_ratio`` is the size budget of a ``sparsity_dict``, computed from the
  parameter counts alone (it works on a model built on the ``meta`` device).
- ``fine_tune`` runs the profile's short fine-tuning (``helpers.train.train`` with an SGD +
  cosine schedule from ``make_finetune_setup``), e.g. with a pruner as callback.
- ``random_vgg`` builds a small VGG with random weights and BatchNorm statistics, as a
  self-contained input for tests.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from helpers.models import VGG
from helpers.train import evaluate, make_finetune_setup, train

PruneFn = Callable[[torch.Tensor, float], torch.Tensor]


def _check_sparsity_dict(model: nn.Module, sparsity_dict: Mapping[str, float]) -> None:
    """Raise a ``KeyError``/``ValueError`` that names the bad entry of ``sparsity_dict``."""
    params = dict(model.named_parameters())
    for name, sparsity in sparsity_dict.items():
        if name not in params:
            weights = [n for n, p in params.items() if p.dim() > 1]
            raise KeyError(
                f"{name!r} is not a parameter of the model; prunable weights are: "
                f"{', '.join(weights)}"
            )
        if params[name].dim() <= 1:
            raise ValueError(
                f"{name!r} has shape {tuple(params[name].shape)}: only conv and linear "
                "weights (2+ dimensions) are pruned"
            )
        if not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) <= 1.0:
            raise ValueError(f"sparsity of {name!r} must be a number in [0, 1], got {sparsity!r}")


def _checked_mask(mask: Any, name: str, param: torch.Tensor) -> torch.Tensor:
    """``mask`` if it is a tensor shaped like ``param`` (the weight ``name``), else a
    ``ValueError`` saying what ``prune_fn`` returned instead (``None``: it forgot to return)."""
    if not isinstance(mask, torch.Tensor) or mask.shape != param.shape:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(
            f"prune_fn must return a mask shaped like {name} {tuple(param.shape)}, got {got}"
        )
    return mask


class FineGrainedPruner:
    """Magnitude-prunes the weights named in ``sparsity_dict`` and keeps them pruned.

    On construction each named weight is pruned in place by ``prune_fn(weight, sparsity)``
    (the student's ``fine_grained_prune``); the returned masks are stored and applied once
    more, so the model is pruned even if ``prune_fn`` only returned the mask.
    ``apply(model)`` multiplies the weights by the stored masks again: call it after every
    optimizer step while fine-tuning, e.g.
    ``train(..., callbacks=[lambda: pruner.apply(model)])``.

    Attributes:
        sparsity_dict: the requested sparsity of each pruned weight.
        masks: bool tensor per weight name, True where the weight is kept.
    """

    def __init__(
        self, model: nn.Module, sparsity_dict: Mapping[str, float], prune_fn: PruneFn
    ) -> None:
        _check_sparsity_dict(model, sparsity_dict)
        self.sparsity_dict = {name: float(s) for name, s in sparsity_dict.items()}
        self.masks = self.prune(model, self.sparsity_dict, prune_fn)
        self.apply(model)

    @staticmethod
    @torch.no_grad()
    def prune(
        model: nn.Module, sparsity_dict: Mapping[str, float], prune_fn: PruneFn
    ) -> dict[str, torch.Tensor]:
        """Prune each named weight with ``prune_fn``; return its mask per weight name."""
        params = dict(model.named_parameters())
        masks: dict[str, torch.Tensor] = {}
        for name, sparsity in sparsity_dict.items():
            param = params[name]
            mask = _checked_mask(prune_fn(param.detach(), float(sparsity)), name, param)
            masks[name] = mask.detach().to(device=param.device, dtype=torch.bool)
        return masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model`` again (in place)."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            param = params[name]
            if mask.device != param.device:
                mask = self.masks[name] = mask.to(param.device)
            param.mul_(mask)


@torch.no_grad()
def sensitivity_scan(
    model: nn.Module,
    dataloader: Iterable,
    prune_fn: PruneFn,
    sparsities: Sequence[float],
    verbose: bool = True,
    cpu_bf16: bool = False,
) -> tuple[list[float], dict[str, list[float]]]:
    """Accuracy when ONE weight at a time is magnitude-pruned to each sparsity.

    Every conv and linear weight (2+ dimensions) is pruned with ``prune_fn(weight,
    sparsity)`` (its returned mask is applied too), the model is evaluated on
    ``dataloader``, and the weight is restored before the next point, also on error.

    Args:
        model: the dense model, on its device.
        dataloader: the data to measure accuracy on (a validation split, not the test set).
        prune_fn: the student's ``fine_grained_prune``.
        sparsities: the sparsities to try, each in [0, 1].
        verbose: print one line per layer.
        cpu_bf16: evaluate in bf16 on the CPU, as ``helpers.train.evaluate`` (default fp32).

    Returns:
        ``(sparsities, accuracies)``: the sparsities as a list of floats, and for each weight
        name the top-1 accuracy in percent at each sparsity.
    """
    sparsities = [float(s) for s in sparsities]
    weights = [(name, p) for name, p in model.named_parameters() if p.dim() > 1]
    accuracies: dict[str, list[float]] = {}
    for index, (name, param) in enumerate(weights):
        original = param.detach().clone()
        row: list[float] = []
        for sparsity in sparsities:
            try:
                mask = _checked_mask(prune_fn(param.detach(), sparsity), name, param)
                param.mul_(mask.to(param.device))
                row.append(evaluate(model, dataloader, verbose=False, cpu_bf16=cpu_bf16))
            finally:
                param.copy_(original)
        accuracies[name] = row
        if verbose:
            points = ", ".join(f"{s:.2f}: {a:5.1f}%" for s, a in zip(sparsities, row, strict=True))
            print(f"[{index + 1}/{len(weights)}] {name:<24} {points}")
    return sparsities, accuracies


def sparse_model_size_ratio(model: nn.Module, sparsity_dict: Mapping[str, float]) -> float:
    """Size of the pruned model over the dense size, both counting parameters only.

    A weight of ``n`` elements pruned to sparsity ``s`` keeps ``n - round(n * s)`` values
    (what ``fine_grained_prune`` keeps when magnitudes have no ties); every other parameter
    (BatchNorm, biases, unpruned weights) is kept whole. Indices are not counted: this is
    the course's "size of the nonzero weights", not the storage of a sparse format (see
    ``helpers.metrics.sparse_size_bits``). Only shapes are read, so ``model`` may live on
    the ``meta`` device.
    """
    _check_sparsity_dict(model, sparsity_dict)
    dense = kept = 0
    for name, param in model.named_parameters():
        numel = param.numel()
        dense += numel
        if name in sparsity_dict:
            kept += numel - round(numel * float(sparsity_dict[name]))
        else:
            kept += numel
    return kept / dense if dense else 1.0


def fine_tune(
    model: nn.Module,
    train_loader: Iterable,
    eval_loader: Iterable,
    num_epochs: int,
    steps_per_epoch: int | None = None,
    callbacks: Sequence[Callable[[], object]] | None = None,
    lr: float = 0.01,
    verbose: bool = True,
    cpu_bf16: bool = False,
) -> list[float]:
    """Fine-tune ``model`` in place; return its top-1 accuracy (%) after each epoch.

    Args:
        model: the (pruned) model, on its device.
        train_loader: training batches (augmented).
        eval_loader: batches the accuracy is measured on after each epoch.
        num_epochs: number of epochs.
        steps_per_epoch: batches per epoch (``None``: the whole ``train_loader``).
        callbacks: run after every optimizer step, e.g. ``[lambda: pruner.apply(model)]``.
        lr: peak learning rate of the cosine schedule.
        verbose: print one line per epoch.
        cpu_bf16: train and evaluate in bf16 on the CPU, as ``helpers.train.train`` (faster
            on a CPU with bf16 hardware; default fp32, as the labs use).

    The model is left in training mode (as ``train`` leaves it): call ``model.eval()`` before
    measuring it yourself.
    """
    if steps_per_epoch is None and not hasattr(train_loader, "__len__"):
        raise ValueError(
            "fine_tune: train_loader has no length (a generator?): give steps_per_epoch, the "
            "number of batches an epoch takes from it"
        )
    steps = len(train_loader) if steps_per_epoch is None else steps_per_epoch
    if hasattr(train_loader, "__len__"):
        steps = min(steps, len(train_loader))
    criterion, optimizer, scheduler = make_finetune_setup(model, num_epochs, steps, lr=lr)
    accuracies: list[float] = []
    for epoch in range(num_epochs):
        loss = train(
            model,
            train_loader,
            criterion,
            optimizer,
            scheduler,
            callbacks,
            max_steps=steps,
            cpu_bf16=cpu_bf16,
        )
        accuracies.append(evaluate(model, eval_loader, verbose=False, cpu_bf16=cpu_bf16))
        if verbose:
            print(
                f"epoch {epoch + 1}/{num_epochs}: train loss {loss:.3f}, "
                f"accuracy {accuracies[-1]:.2f}%"
            )
    return accuracies


def sorting_failure(
    model: nn.Module, error: Exception, importance_fn: Callable[[torch.Tensor], torch.Tensor]
) -> AssertionError:
    """Why sorting ``model``'s channels raised ``error``, for Lab 1's tests: an importance
    function (the student's ``get_input_channel_importance``) whose result has the wrong
    shape, which no sorting can use, else most likely a tensor reordered along the wrong
    dimension. An importance function that raises is left to its own test."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for i, conv in enumerate(convs[1:], start=1):
        try:
            shape = tuple(importance_fn(conv.weight).shape)
        except Exception:  # noqa: BLE001 (its own test cell reports it)
            break
        if shape != (conv.weight.shape[1],):
            return AssertionError(
                f"get_input_channel_importance returned shape {shape} for conv{i}.weight of "
                f"shape {tuple(conv.weight.shape)}: sorting needs one value per INPUT channel, "
                f"({conv.weight.shape[1]},). Fix get_input_channel_importance first (its test "
                "says how); apply_channel_sorting cannot pass while the importance it sorts by "
                f"has the wrong shape. (apply_channel_sorting raised {error!r})"
            )
    return AssertionError(
        f"apply_channel_sorting raised {error!r}. A shape error usually means a tensor was "
        "reordered along the wrong dimension: permute conv i's OUTPUT channels (dim 0), bn i's "
        "weight, bias, running_mean and running_var, and conv i+1's INPUT channels (dim 1)"
    )


@torch.no_grad()
def random_vgg(
    arch: Sequence[int | str], num_classes: int = 10, seed: int = 0, device: str = "cpu"
) -> VGG:
    """A VGG with random weights and non-trivial BatchNorm state, in eval mode.

    BatchNorm weights, biases, running means and variances are all random, so a function
    that forgets one of them gives a different output. Uses its own random generator: the
    global random state is untouched.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # VGG's default init draws from the global RNG
        model = VGG(arch=tuple(arch), num_classes=num_classes)

    def randn(shape: torch.Size, scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * scale

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.copy_(randn(module.weight.shape, (2.0 / fan_in) ** 0.5))
            if module.bias is not None:
                module.bias.copy_(randn(module.bias.shape, 0.1))
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
            module.bias.copy_(randn(module.bias.shape, 0.2))
            module.running_mean.copy_(randn(module.running_mean.shape, 0.2))
            module.running_var.copy_(uniform(module.running_var.shape, 0.5, 2.0))
    return model.to(device).eval()
