"""benchmarks/dense_recipes.py: the recipes it compares, that it trains them as named, reuse."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import dense_recipes  # noqa: E402
from dense_recipes import checkpoint_path, finished_run, recipe_for, run_recipes, summary  # noqa: E402

import helpers.train  # noqa: E402
from helpers.checkpoints import load_checkpoint, read_checkpoint, save_atomic  # noqa: E402
from helpers.data import get_dataloaders  # noqa: E402
from helpers.models import VGG  # noqa: E402
from helpers.profiles import get_profile  # noqa: E402
from helpers.train import COURSE_RECIPE, dense_config, evaluate, train_dense  # noqa: E402

SMOKE = get_profile("smoke")
CPU = torch.device("cpu")


def test_recipes_vary_the_course_recipe_as_named():
    # the course recipe: batch 512, peak lr 0.4, no label smoothing (MIT 6.5940)
    assert recipe_for("course", COURSE_RECIPE, 20) == COURSE_RECIPE
    small = recipe_for("small-batch", COURSE_RECIPE, 3)
    assert (small.epochs, small.batch_size, small.lr, small.label_smoothing) == (3, 128, 0.1, 0.0)
    smooth = recipe_for("smooth", COURSE_RECIPE, 20)
    assert (smooth.batch_size, smooth.lr, smooth.label_smoothing) == (512, 0.4, 0.1)
    both = recipe_for("small-batch-smooth", COURSE_RECIPE, 20)
    assert (both.batch_size, both.lr, both.label_smoothing) == (128, 0.1, 0.1)
    for recipe in (small, smooth, both):  # nothing else changes
        assert (recipe.momentum, recipe.weight_decay, recipe.peak_fraction) == (0.9, 5e-4, 0.25)
    with pytest.raises(ValueError, match="unknown recipe 'adam'"):
        recipe_for("adam", COURSE_RECIPE, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The course and quarter-batch recipes trained once under smoke (seconds)."""
    out = tmp_path_factory.mktemp("recipes")
    rows = run_recipes(SMOKE, ["course", "small-batch"], 1, [0], out, CPU, verbose=False)
    return out, rows


def test_each_recipe_is_trained_with_its_own_settings(trained):
    out, rows = trained
    assert [(r["recipe"], r["seed"], r["reused"]) for r in rows] == [
        ("course", 0, False),
        ("small-batch", 0, False),
    ]
    base = helpers.train.SMOKE_RECIPE
    recorded = read_checkpoint(checkpoint_path(out, "smoke", "small-batch", 1, 0))["meta"]
    assert recorded["recipe"]["batch_size"] == base.batch_size // 4
    assert recorded["recipe"]["lr"] == pytest.approx(base.lr / 4)
    assert recorded["device"] == "cpu"
    # the reported accuracy is the checkpoint's, evaluated afresh on the smoke test split
    test = get_dataloaders(SMOKE, device=CPU)["test"]
    for row in rows:
        model = VGG(SMOKE.arch)
        load_checkpoint(model, checkpoint_path(out, "smoke", row["recipe"], 1, 0))
        assert evaluate(model, test, verbose=False) == pytest.approx(row["accuracy"])
        assert row["history"] == [row["accuracy"]]


def test_the_course_row_is_what_train_dense_makes_with_the_course_recipe(trained, tmp_path):
    out, rows = trained
    smoke_recipe = asdict(helpers.train.SMOKE_RECIPE)  # train_dense's defaults are full's
    direct = train_dense(SMOKE, **smoke_recipe, out=tmp_path / "d.pth", device=CPU, verbose=False)
    course = VGG(SMOKE.arch)
    load_checkpoint(course, checkpoint_path(out, "smoke", "course", 1, 0))
    for key, value in direct.model.state_dict().items():
        assert torch.equal(course.state_dict()[key], value), key  # same init, data and steps
    assert rows[0]["accuracy"] == pytest.approx(direct.test_accuracy)


def test_a_rerun_reuses_finished_runs_and_trains_only_what_is_new(trained, monkeypatch):
    out, rows = trained
    trainings = []

    def fake_train_dense(profile, **kwargs):
        trainings.append(kwargs)
        raise KeyboardInterrupt  # stands for a long run: nothing may reach it

    monkeypatch.setattr(helpers.train, "train_dense", fake_train_dense)
    again = run_recipes(SMOKE, ["course", "small-batch"], 1, [0], out, CPU, verbose=False)
    assert trainings == [] and all(r["reused"] for r in again)
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    with pytest.raises(KeyboardInterrupt):  # another seed is a new run
        run_recipes(SMOKE, ["course"], 1, [1], out, CPU, verbose=False)
    assert trainings[0]["seed"] == 1 and trainings[0]["batch_size"] == 64


def test_a_checkpoint_from_other_settings_or_another_device_is_not_reused(trained, tmp_path):
    out, _ = trained
    path = checkpoint_path(out, "smoke", "course", 1, 0)
    config = dense_config(recipe_for("course", helpers.train.SMOKE_RECIPE, 1), SMOKE, 0)
    assert finished_run(path, config, "cpu") is not None
    assert finished_run(path, {**config, "lr": 0.2}, "cpu") is None
    assert finished_run(path, config, "cuda") is None
    assert finished_run(tmp_path / "missing.pth", config, "cpu") is None
    broken = tmp_path / "broken.pth"
    broken.write_text("<html>not a checkpoint</html>")
    assert finished_run(broken, config, "cpu") is None
    on_gpu = read_checkpoint(path)
    on_gpu["meta"]["device"] = "cuda:0"
    save_atomic(on_gpu, tmp_path / "gpu.pth")
    assert finished_run(tmp_path / "gpu.pth", config, "cuda") is not None


def test_summary_averages_seeds_and_compares_with_the_course_recipe():
    rows = [
        {"recipe": "course", "accuracy": 90.0, "wall_s": 10.0},
        {"recipe": "smooth", "accuracy": 91.0, "wall_s": 12.0},
        {"recipe": "course", "accuracy": 91.0, "wall_s": 30.0},
        {"recipe": "smooth", "accuracy": 92.5, "wall_s": 14.0},
    ]
    table = {s["recipe"]: s for s in summary(rows)}
    assert table["course"]["accuracy"] == pytest.approx(90.5)
    assert table["smooth"]["accuracy"] == pytest.approx(91.75)
    assert table["smooth"]["vs_course"] == pytest.approx(1.25)
    assert table["smooth"]["spread"] == pytest.approx(1.5)
    assert table["course"]["wall_s"] == pytest.approx(20.0) and table["smooth"]["seeds"] == 2
    assert summary([{"recipe": "smooth", "accuracy": 1.0, "wall_s": 1.0}])[0]["vs_course"] is None


def test_main_prints_both_tables_and_the_best_recipe(trained, capsys):
    out, rows = trained
    args = ["--profile", "smoke", "--recipes", "course", "small-batch", "--out-dir", str(out)]
    assert dense_recipes.main(args) == 0
    printed = capsys.readouterr().out
    assert "budget 1 epoch(s) of 1,792 training images" in printed  # 28 steps of 64
    assert "| course | 0 | 64 | 0.1 | 0 | 28 |" in printed
    assert "| small-batch | 0 | 16 | 0.025 | 0 | 112 |" in printed
    best = max(rows, key=lambda r: r["accuracy"])
    assert f"best in 1 epoch(s): {best['recipe']}, {best['accuracy']:.2f}%" in printed


def test_main_rejects_bad_arguments_and_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAB_DATA", str(tmp_path))  # main sets it from --data; restored after
    with pytest.raises(SystemExit):
        dense_recipes.main(["--epochs", "0"])
    with pytest.raises(SystemExit):
        dense_recipes.main(["--recipes", "course", "course"])
    with pytest.raises(SystemExit):
        dense_recipes.main(["--recipes", "adam"])
    assert dense_recipes.main(["--profile", "full", "--data", str(tmp_path)]) == 2
    assert "CIFAR-10 is not prepared" in capsys.readouterr().err
