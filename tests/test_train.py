"""Does the one training loop train, step its schedule and callbacks, evaluate honestly and
resume the dense recipe after an interruption?"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import helpers.checkpoints
import helpers.data
import helpers.train
from helpers.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from helpers.data import DeviceLoader, make_synthetic
from helpers.models import VGG
from helpers.profiles import SMALL_VGG_ARCH, get_profile
from helpers.train import (
    SMOKE_RECIPE,
    TriangularLR,
    evaluate,
    make_finetune_setup,
    partial_path,
    train,
    train_dense,
    train_dense_cli,
)

TINY_ARCH = (8, "M", 16, "M", 16, "M")
# The smoke profile with an even smaller VGG, for fast runs of the dense recipe.
TINY_PROFILE = dataclasses.replace(get_profile("smoke"), name="tiny-test", arch=TINY_ARCH)


pytestmark = pytest.mark.usefixtures("lab_data")  # its own LAB_DATA, the CPU (conftest)


@pytest.fixture(scope="module")
def data() -> dict:
    return make_synthetic(256, 128, seed=0)


def loaders(data: dict, batch_size: int = 32, seed: int = 0) -> dict[str, DeviceLoader]:
    return {
        "train": DeviceLoader(
            data["train_images"],
            data["train_labels"],
            batch_size,
            shuffle=True,
            augment=True,
            seed=seed,
            device="cpu",
        ),
        "test": DeviceLoader(data["test_images"], data["test_labels"], 64, device="cpu"),
    }


def tiny_model(seed: int = 0) -> VGG:
    torch.manual_seed(seed)
    return VGG(TINY_ARCH)


class CountingScheduler:
    """A scheduler stand-in that records when it is stepped."""

    def __init__(self, optimizer: torch.optim.Optimizer, log: list) -> None:
        self.optimizer, self.log = optimizer, log

    def step(self) -> None:
        self.log.append("scheduler")


def test_train_reduces_the_loss_and_returns_the_sample_mean(data):
    """Does the epoch loss fall over epochs, and is it the mean over samples of batch losses?"""
    model = tiny_model()
    seen: list[tuple[float, int]] = []

    class Recording(nn.CrossEntropyLoss):
        def forward(self, logits, targets):
            loss = super().forward(logits, targets)
            seen.append((loss.item(), len(targets)))
            return loss

    criterion = Recording()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dataloader = loaders(data, batch_size=48)["train"]  # 256 = 5 * 48 + 16: a short last batch
    losses = []
    for _ in range(4):
        seen.clear()
        losses.append(train(model, dataloader, criterion, optimizer))
        expected = sum(loss * n for loss, n in seen) / sum(n for _, n in seen)
        assert losses[-1] == pytest.approx(expected, rel=1e-5)
        assert sum(n for _, n in seen) == 256
    assert losses[-1] < losses[0]
    assert model.training


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((7, 5), torch.float16),
        ((7, 0), torch.float16),
        ((8, 0), torch.bfloat16),
        ((9, 0), torch.bfloat16),
    ],
)
def test_autocast_uses_bf16_only_on_gpus_with_bf16_hardware(monkeypatch, capability, expected):
    """A T4 (7.5) or V100 (7.0) gets fp16 (cuDNN has no bf16 convolutions there), an A100
    (8.0) or H100 (9.0) bf16; the CPU none."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert helpers.train.autocast_dtype(torch.device("cuda")) == expected
    assert helpers.train.autocast_dtype(torch.device("cpu")) is None


def test_fp16_autocast_trains_with_loss_scaling(data, monkeypatch):
    """The fp16 path of older GPUs, run on the CPU (autocast and GradScaler work there too):
    does it scale the loss with one scaler per optimizer, kept across epochs (a scale too
    large at first skips the first epoch's steps, not every epoch's), keep the scheduler in
    step without its warning about skipped steps, learn, and evaluate as fp32 does?"""
    scalers = []
    real = torch.amp.GradScaler

    def spy(*args, **kwargs):
        scalers.append(real(*args, init_scale=2.0**30, **kwargs))  # overflows: steps skipped
        return scalers[-1]

    model = tiny_model()
    test = loaders(data)["test"]
    fp32_accuracy = evaluate(model, test, verbose=False)
    monkeypatch.setattr(helpers.train, "autocast_dtype", lambda device: torch.float16)
    monkeypatch.setattr(torch.amp, "GradScaler", spy)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dataloader = loaders(data, batch_size=32)["train"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scheduler's warning would fail here
        losses = [
            train(model, dataloader, nn.CrossEntropyLoss(), optimizer, scheduler, verbose=False)
            for _ in range(4)
        ]
    assert len(scalers) == 1 and scalers[0].get_scale() < 2.0**30  # one, kept; it backed off
    assert scheduler.last_epoch == 4 * len(dataloader)
    assert losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    fp16_accuracy = evaluate(model, test, verbose=False)
    monkeypatch.setattr(helpers.train, "autocast_dtype", lambda device: None)
    assert fp16_accuracy == pytest.approx(evaluate(model, test, verbose=False), abs=2.0)
    assert fp16_accuracy != fp32_accuracy  # it learned


def test_cpu_bf16_autocasts_on_the_cpu_with_channels_last_inputs(data):
    """With cpu_bf16, do train and evaluate run the convolutions in bf16 on channels_last
    inputs (as on a GPU), does evaluate count as a brute force under the same autocast does,
    and without it is everything fp32 and contiguous as before?"""
    model = tiny_model()
    seen: list[tuple] = []
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(
        lambda module, args, out: seen.append(
            (args[0].is_contiguous(memory_format=torch.channels_last), out.dtype)
        )
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dataloader = loaders(data)["train"]
    losses = [
        train(model, dataloader, nn.CrossEntropyLoss(), optimizer, verbose=False, cpu_bf16=True)
        for _ in range(3)
    ]
    assert set(seen) == {(True, torch.bfloat16)} and len(seen) == 3 * len(dataloader)
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    seen.clear()
    test = loaders(data)["test"]
    accuracy = evaluate(model, test, verbose=False, cpu_bf16=True)
    assert set(seen) == {(True, torch.bfloat16)}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval()
        correct = sum(
            (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
            for x, y in test
        )
    assert accuracy == pytest.approx(100 * correct / len(data["test_labels"]))
    seen.clear()
    evaluate(model, test, verbose=False)
    assert set(seen) == {(False, torch.float32)}


def test_scheduler_steps_once_per_batch_and_callbacks_follow_each_optimizer_step(data):
    """Is the scheduler stepped len(dataloader) times, each callback right after each step?"""
    model = tiny_model()
    log: list[str] = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    original_step = optimizer.step

    def logged_step(*args, **kwargs):
        log.append("optimizer")
        return original_step(*args, **kwargs)

    optimizer.step = logged_step
    dataloader = loaders(data)["train"]
    train(
        model,
        dataloader,
        nn.CrossEntropyLoss(),
        optimizer,
        CountingScheduler(optimizer, log),
        callbacks=[lambda: log.append("a"), lambda: log.append("b")],
    )
    assert len(dataloader) == 8
    assert log == ["optimizer", "scheduler", "a", "b"] * len(dataloader)


def test_callbacks_see_the_updated_weights(data):
    """Can a callback re-apply a pruning mask so that the masked weights stay zero?"""
    model = tiny_model()
    weight = model.backbone.conv1.weight
    mask = torch.rand_like(weight) > 0.5

    def apply_mask():
        with torch.no_grad():
            weight.mul_(mask)

    apply_mask()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, loaders(data)["train"], nn.CrossEntropyLoss(), optimizer, callbacks=[apply_mask])
    assert torch.all(weight[~mask] == 0)
    assert torch.count_nonzero(weight[mask]) == mask.sum()


def test_max_steps_stops_early(data):
    """Does max_steps cut the epoch to that many optimizer and scheduler steps?"""
    model = tiny_model()
    log: list[str] = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train(
        model,
        loaders(data)["train"],
        nn.CrossEntropyLoss(),
        optimizer,
        CountingScheduler(optimizer, log),
        max_steps=3,
    )
    assert log == ["scheduler"] * 3


def test_train_trains_when_the_caller_left_gradients_off(data):
    """A cell that left ``torch.set_grad_enabled(False)`` on (a calibration written without
    ``with``): does ``train`` still update the weights, and leave the caller's mode as it was?"""
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        train(model, loaders(data)["train"], nn.CrossEntropyLoss(), optimizer, max_steps=2)
        assert not torch.is_grad_enabled()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_max_steps_takes_only_the_batches_it_uses(data):
    """Are exactly ``max_steps`` batches drawn from the dataloader (none left over and lost
    from an iterator shared between calls), and is an empty dataloader an error, not a loss
    or an accuracy of 0?"""
    model = tiny_model()
    batches = list(loaders(data)["train"])
    drawn: list[int] = []

    def counted():
        for index, batch in enumerate(batches):
            drawn.append(index)
            yield batch

    stream = counted()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        train(model, stream, nn.CrossEntropyLoss(), optimizer, max_steps=2, verbose=False)
    assert drawn == [0, 1, 2, 3]
    assert train(model, iter(()), nn.CrossEntropyLoss(), optimizer, max_steps=0) == 0.0
    with pytest.raises(ValueError, match="train: the dataloader yielded no batches"):
        train(model, [], nn.CrossEntropyLoss(), optimizer, verbose=False)
    with pytest.raises(ValueError, match="evaluate: the dataloader yielded no batches"):
        evaluate(model, [], verbose=False)


def brute_force_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in percent, one image at a time, counted by hand."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for image, label in zip(images, labels, strict=True):
            logits = model(image[None].float() / 255)
            correct += int(logits.argmax(dim=1).item() == label.item())
    return 100 * correct / len(labels)


def test_evaluate_matches_a_brute_force_count(data):
    """Is evaluate's accuracy the per-image count, in percent, for a partly trained model?"""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, loaders(data)["train"], nn.CrossEntropyLoss(), optimizer)
    accuracy = evaluate(model, loaders(data)["test"], verbose=False)
    expected = brute_force_accuracy(model, data["test_images"], data["test_labels"])
    assert 0 < expected < 100  # a meaningful comparison, not all right or all wrong
    assert accuracy == pytest.approx(expected)


def test_evaluate_restores_training_flags_and_leaves_statistics_alone(data):
    """Does evaluate put back each module's mode (mixed too) and leave BN statistics alone?"""
    model = tiny_model()
    model.train()
    model.backbone.bn1.eval()  # a mix of modes must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, loaders(data)["test"], verbose=False)
    assert model.training and model.backbone.bn0.training
    assert not model.backbone.bn1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    evaluate(model, loaders(data)["test"], verbose=False)
    assert not any(m.training for m in model.modules())


def test_batches_reach_a_cpu_model_by_blocking_copies(data, monkeypatch):
    """A copy to the CPU made with non_blocking=True may be read before it lands (batches on
    the GPU, an int8 model on the CPU): train and evaluate never ask for one, and still do
    towards an accelerator (the meta device stands in for one here)."""
    asked: list[tuple[str, bool]] = []
    original = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        moved = original(self, *args, **kwargs)
        asked.append((moved.device.type, bool(kwargs.get("non_blocking", False))))
        return moved

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    train(model, loaders(data)["train"], nn.CrossEntropyLoss(), optimizer, max_steps=2)
    evaluate(model, loaders(data)["test"], verbose=False)
    assert ("cpu", False) in asked and ("cpu", True) not in asked
    helpers.train._move(torch.zeros(2), torch.device("meta"))
    assert asked[-1] == ("meta", True)


def test_plain_dataloader_works_like_the_device_loader(data):
    """Do train and evaluate accept a torch DataLoader over a TensorDataset, same numbers?"""
    model = tiny_model()
    test_x = data["test_images"].float() / 255
    plain = DataLoader(TensorDataset(test_x, data["test_labels"]), batch_size=50)
    assert evaluate(model, plain, verbose=False) == pytest.approx(
        evaluate(model, loaders(data)["test"], verbose=False)
    )
    train_x = data["train_images"].float() / 255
    train_loader = DataLoader(TensorDataset(train_x, data["train_labels"]), batch_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = train(model, train_loader, nn.CrossEntropyLoss(), optimizer)
    assert loss == loss and loss > 0  # finite and positive


def test_evaluate_applies_extra_preprocess(data):
    """Does extra_preprocess transform each batch before the model sees it?"""
    model = tiny_model().eval()
    zero = evaluate(
        model, loaders(data)["test"], verbose=False, extra_preprocess=[torch.zeros_like]
    )
    with torch.no_grad():
        prediction = model(torch.zeros(1, 3, 32, 32)).argmax().item()
    expected = 100 * (data["test_labels"] == prediction).float().mean().item()
    assert zero == pytest.approx(expected)


def test_finetune_setup_decays_once_per_step_to_zero():
    """Is make_finetune_setup's learning rate a single cosine over epochs * steps?"""
    model = tiny_model()
    criterion, optimizer, scheduler = make_finetune_setup(model, num_epochs=2, steps_per_epoch=5)
    assert isinstance(criterion, nn.CrossEntropyLoss)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 5e-4)
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(0.005)  # half-way: cos(pi / 2)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_triangular_schedule_is_linear_up_then_down():
    """Does the one-cycle factor rise linearly to 1 at the peak and fall linearly to 0?"""
    f = TriangularLR(peak_step=5, total_steps=20)
    assert [f(s) for s in (0, 1, 5, 10, 20)] == pytest.approx([0, 0.2, 1, 2 / 3, 0])


def run_dense(data, out, **kwargs):
    return train_dense(
        TINY_PROFILE,
        epochs=kwargs.pop("epochs", 2),
        lr=0.05,
        batch_size=32,
        out=out,
        seed=0,
        device="cpu",
        dataloaders=loaders(data),
        verbose=kwargs.pop("verbose", False),
        **kwargs,
    )


def interrupt_in_epoch_2(data, out, monkeypatch, **kwargs) -> None:
    """``run_dense`` to ``out``, stopped by Ctrl-C during epoch 2 (before it was saved), so that
    ``out``'s .partial holds epoch 1."""
    real_evaluate = helpers.train.evaluate
    calls = []

    def killed_in_epoch_2(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C before epoch 2 was saved
        return real_evaluate(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(helpers.train, "evaluate", killed_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            run_dense(data, out, **kwargs)
    assert partial_path(out).exists() and not out.exists()


def count_epochs(monkeypatch) -> list[tuple[str, bool]]:
    """From now on, record ``(desc, cpu_bf16)`` of every epoch ``train_dense`` trains."""
    epochs_run = []
    real_epoch = helpers.train.train

    def counting_epoch(*args, **kwargs):
        epochs_run.append((kwargs.get("desc"), kwargs.get("cpu_bf16")))
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(helpers.train, "train", counting_epoch)
    return epochs_run


def test_train_dense_writes_a_checkpoint_that_loads(data, tmp_path):
    """Does train_dense save an MIT-layout file that loads and scores its recorded accuracy?"""
    profile = TINY_PROFILE
    small_loaders = loaders(data)
    result = train_dense(
        profile,
        epochs=2,
        lr=0.05,
        batch_size=32,
        out=tmp_path / "dense.pth",
        device="cpu",
        dataloaders=small_loaders,
        verbose=False,
    )
    assert result.path == tmp_path / "dense.pth" and not partial_path(result.path).exists()
    assert [h["epoch"] for h in result.history] == [1, 2]
    model = VGG(profile.arch)
    meta = load_checkpoint(model, result.path)
    assert meta["recipe"]["epochs"] == 2 and meta["arch"] == list(TINY_ARCH)
    assert meta["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert evaluate(model, small_loaders["test"], verbose=False) == pytest.approx(
        result.test_accuracy
    )


def test_train_dense_defaults_to_the_profiles_recipe(data, tmp_path):
    """Left out, do the settings come from the profile's recipe (smoke or course), as in the CLI?"""
    smoke = train_dense(
        TINY_PROFILE, out=tmp_path / "s.pth", dataloaders=loaders(data), verbose=False
    )
    recorded = load_checkpoint(VGG(TINY_ARCH), smoke.path)["recipe"]
    assert {k: recorded[k] for k in dataclasses.asdict(helpers.train.SMOKE_RECIPE)} == (
        dataclasses.asdict(helpers.train.SMOKE_RECIPE)
    )
    on_cifar = dataclasses.replace(TINY_PROFILE, name="tiny-cifar", dataset="cifar10")
    course = train_dense(
        on_cifar, epochs=1, out=tmp_path / "c.pth", dataloaders=loaders(data), verbose=False
    )
    recorded = load_checkpoint(VGG(TINY_ARCH), course.path)["recipe"]
    expected = {**dataclasses.asdict(helpers.train.COURSE_RECIPE), "epochs": 1}
    assert {k: recorded[k] for k in expected} == expected  # lr 0.4, batch 512, ...


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_train_dense_resumes_after_an_interruption(data, tmp_path, monkeypatch, precision):
    """Killed during epoch 2, does a rerun continue from epoch 1 and end bit-identical? With
    fp16 (older GPUs, run here on the CPU), the loss scale it had adapted to is resumed too
    (it starts too large, so that epoch 1 skips steps: a fresh scale would skip them again)."""
    if precision == "fp16":
        real_scaler = torch.amp.GradScaler
        monkeypatch.setattr(helpers.train, "autocast_dtype", lambda device: torch.float16)
        monkeypatch.setattr(
            torch.amp, "GradScaler", lambda *a, **k: real_scaler(*a, init_scale=2.0**20, **k)
        )
    uninterrupted = run_dense(data, tmp_path / "a.pth").model

    out = tmp_path / "b.pth"
    interrupt_in_epoch_2(data, out, monkeypatch)
    epochs_run = count_epochs(monkeypatch)
    resumed = run_dense(data, out)
    assert epochs_run == [("epoch 2/2", False)]
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_train_dense_records_cpu_bf16_and_resumes_only_with_it(data, tmp_path, capsys, monkeypatch):
    """Is cpu_bf16 one of the settings a checkpoint records and a resume checks: does a bf16
    run's .partial resume a bf16 run (from epoch 2), and is it ignored, with a notice naming
    cpu_bf16, by an fp32 run; and does an fp32 run record what it always did?"""
    interrupt_in_epoch_2(data, tmp_path / "a.pth", monkeypatch, cpu_bf16=True)
    partial_path(tmp_path / "b.pth").write_bytes(partial_path(tmp_path / "a.pth").read_bytes())
    epochs_run = count_epochs(monkeypatch)
    fp32 = run_dense(data, tmp_path / "a.pth", verbose=True)
    assert "different settings (cpu_bf16)" in capsys.readouterr().out
    assert epochs_run == [("epoch 1/2", False), ("epoch 2/2", False)]  # from scratch
    epochs_run.clear()
    bf16 = run_dense(data, tmp_path / "b.pth", cpu_bf16=True, verbose=True)
    assert "resuming" in capsys.readouterr().out
    assert epochs_run == [("epoch 2/2", True)]
    assert read_checkpoint(bf16.path)["meta"]["recipe"]["cpu_bf16"] is True
    assert read_checkpoint(fp32.path)["meta"]["recipe"] == helpers.train.dense_config(
        dataclasses.replace(helpers.train.SMOKE_RECIPE, epochs=2, lr=0.05, batch_size=32),
        TINY_PROFILE,
        0,
    )


@pytest.mark.parametrize("hardware", [True, False])
def test_train_dense_on_the_cpu_says_whether_cpu_bf16_pays(
    data, tmp_path, capsys, monkeypatch, hardware
):
    """On a CPU with bf16 instructions, does an fp32 run suggest --cpu-bf16 (and a bf16 run not)?
    Without them, does a bf16 run warn that it is emulated (and an fp32 run say nothing)?"""
    monkeypatch.setattr(helpers.train, "cpu_has_bf16", lambda: hardware)
    on_cifar = dataclasses.replace(TINY_PROFILE, name="tiny-cifar", dataset="cifar10")
    said = {}
    for cpu_bf16 in (False, True):
        train_dense(
            on_cifar,
            epochs=1,
            out=tmp_path / f"{cpu_bf16}.pth",
            device="cpu",
            dataloaders=loaders(data),
            cpu_bf16=cpu_bf16,
        )
        said[cpu_bf16] = capsys.readouterr().out
    assert all("training the dense VGG on the CPU" in out for out in said.values())
    suggestion, warning = "--cpu-bf16 trains faster", "--cpu-bf16 emulates them"
    assert (suggestion in said[False]) is hardware and suggestion not in said[True]
    assert (warning in said[True]) is not hardware and warning not in said[False]


def test_train_dense_ignores_a_partial_made_with_other_settings(data, tmp_path, capsys):
    """Is a .partial from another recipe (other epochs) ignored, with a notice, not mixed in?"""
    out = tmp_path / "c.pth"
    helpers.checkpoints.save_atomic({"config": {"epochs": 1}, "epoch": 1}, partial_path(out))
    result = run_dense(data, out, verbose=True)
    assert "ignoring" in capsys.readouterr().out
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_no_resume_starts_from_scratch(data, tmp_path, monkeypatch):
    """Does resume=False train every epoch even when a matching .partial exists?"""
    out = tmp_path / "d.pth"
    interrupt_in_epoch_2(data, out, monkeypatch)
    result = run_dense(data, out, resume=False)
    assert len(result.history) == 2 and not partial_path(out).exists()


def test_cli_passes_the_recipe_and_profile(monkeypatch, tmp_path):
    """Do the command-line flags reach train_dense, with the smoke recipe as smoke defaults?"""
    seen = {}

    def fake_train_dense(profile, **kwargs):
        seen.update(kwargs, profile=profile.name)

    monkeypatch.setattr(helpers.train, "train_dense", fake_train_dense)
    argv = ["--profile", "full", "--epochs", "3", "--lr", "0.2", "--batch-size", "256"]
    argv += ["--out", str(tmp_path / "x.pth"), "--label-smoothing", "0.1", "--no-resume"]
    assert train_dense_cli(argv + ["--seed", "4"]) == 0
    assert seen["profile"] == "full" and seen["epochs"] == 3 and seen["lr"] == 0.2
    assert seen["batch_size"] == 256 and seen["label_smoothing"] == 0.1
    assert seen["out"] == tmp_path / "x.pth" and seen["resume"] is False and seen["seed"] == 4
    assert seen["cpu_bf16"] is False
    assert (
        train_dense_cli(["--profile", "full", "--out", str(tmp_path / "z.pth"), "--cpu-bf16"]) == 0
    )
    assert seen["cpu_bf16"] is True
    seen.clear()
    assert train_dense_cli(["--profile", "full", "--out", str(tmp_path / "y.pth")]) == 0
    left_out = ("epochs", "lr", "batch_size", "label_smoothing")
    assert all(seen[k] is None for k in left_out)  # train_dense takes the profile's recipe


def test_cli_keeps_a_checkpoint_already_there(monkeypatch, lab_data, capsys):
    """Does train-dense refuse to replace a checkpoint (say the downloaded MIT file), leave it
    byte for byte, say how to keep both, and replace it only with --overwrite?"""
    calls = []
    monkeypatch.setattr(helpers.train, "train_dense", lambda profile, **kw: calls.append(kw))
    path = helpers.train.default_dense_path(get_profile("full"))
    path.parent.mkdir(parents=True)
    save_checkpoint(VGG(TINY_ARCH), path)  # no training record, as in the MIT file
    before = path.read_bytes()
    assert train_dense_cli(["--profile", "full"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--overwrite" in err and "--out" in err
    assert "not trained by train-dense" in err
    assert not calls and path.read_bytes() == before
    assert train_dense_cli(["--profile", "full", "--overwrite"]) == 0
    assert calls and calls[0]["out"] == path
    path.write_bytes(b"<html>not a checkpoint</html>")
    assert train_dense_cli(["--profile", "full"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_cli_without_cifar_explains_how_to_get_it(capsys):
    """Under the full profile with no prepared CIFAR-10, does it exit 1 with the data hint?"""
    assert train_dense_cli(["--profile", "full", "--epochs", "1"]) == 1
    assert "python -m helpers data" in capsys.readouterr().err


def test_cli_unknown_profile_is_a_usage_error(capsys):
    assert train_dense_cli(["--profile", "nope"]) == 2
    assert "unknown profile" in capsys.readouterr().err


def test_cli_smoke_trains_for_real(monkeypatch, lab_data, capsys):
    """Under smoke, does the command train the small VGG on synthetic data and save it?"""
    monkeypatch.setattr(helpers.data, "SYNTHETIC_TRAIN", 384)  # 128 after the validation split
    monkeypatch.setattr(helpers.data, "SYNTHETIC_TEST", 64)
    assert train_dense_cli(["--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "wall time" in out
    path = helpers.train.default_dense_path(get_profile("smoke"))
    assert path.parent == lab_data
    load_checkpoint(VGG(SMALL_VGG_ARCH), path)
    recipe = read_checkpoint(path)["meta"]["recipe"]
    assert recipe == helpers.train.dense_config(SMOKE_RECIPE, get_profile("smoke"), 0)
    assert train_dense_cli(["--profile", "smoke"]) == 2  # a second run keeps the first
    assert f"trained here: {SMOKE_RECIPE.epochs} epochs" in capsys.readouterr().err
