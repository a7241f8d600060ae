"""Do the plotting helpers draw headless figures with the panels and labels the labs expect?"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn.utils import prune

from helpers import plots
from helpers.models import VGG
from helpers.profiles import SMALL_VGG_ARCH

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = VGG(SMALL_VGG_ARCH)
    with torch.no_grad():
        weight = model.backbone.conv1.weight
        weight[weight.abs() < weight.abs().median()] = 0
    return model


def weight_names(model):
    return [name for name, p in model.named_parameters() if p.dim() > 1]


def save_png(fig, path):
    """Save ``fig`` and check a real PNG came out; closes nothing global."""
    assert isinstance(fig, Figure)
    fig.savefig(path, dpi=60)  # low resolution: the test checks drawing, not looks
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    plt.close(fig)
    return data


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Helpers must not register figures with pyplot (they would pile up in a long run)."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


@pytest.mark.parametrize("count_nonzero_only", [False, True])
def test_weight_distribution_has_one_panel_per_weight(model, tmp_path, count_nonzero_only):
    """One histogram per conv/linear weight, titled with its name, and a PNG on disk?"""
    fig = plots.plot_weight_distribution(model, bins=32, count_nonzero_only=count_nonzero_only)
    names = weight_names(model)
    assert len(fig.axes) == len(names) == 9
    assert [ax.get_title().split(",")[0] for ax in fig.axes] == names
    assert "sparsity 0.50" in fig.axes[1].get_title()
    if count_nonzero_only:
        save_png(fig, tmp_path / "weights.png")


def test_weight_distribution_drops_unused_grid_cells():
    """With 4 weights in a 3-column grid, are the 2 empty cells removed?"""
    model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(4)))
    with torch.no_grad():
        model[3].weight.zero_()  # an all-zero layer must not break the nonzero histogram
    fig = plots.plot_weight_distribution(model, count_nonzero_only=True)
    assert len(fig.axes) == 4
    assert fig.axes[3].texts[0].get_text() == "all zero"


def test_plots_of_a_model_with_prune_masks_attached_show_the_masked_weights():
    """Before ``prune.remove``, do both weight plots show the weights the model computes with
    (``module.weight``, half zero here), named ``weight``, and not the unmasked ``weight_orig``?"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    assert int(model[0].weight_orig.count_nonzero()) == model[0].weight.numel()  # unmasked
    fig = plots.plot_weight_distribution(model, count_nonzero_only=True)
    assert [ax.get_title() for ax in fig.axes] == [
        "0.weight, sparsity 0.50",
        "3.weight, sparsity 0.00",
    ]
    plt.close(fig)
    fig = plots.plot_num_parameters_distribution(model, count_nonzero_only=True)
    (ax,) = fig.axes
    assert [label.get_text() for label in ax.get_xticklabels()] == ["0.weight", "3.weight"]
    assert [patch.get_height() for patch in ax.patches] == [216, 32, 108, 32]  # all, then nonzero
    plt.close(fig)


def test_sensitivity_scan_panels_and_reference_lines(tmp_path):
    """One panel per layer with the curve, the dense line and the dashed threshold?"""
    sparsities = [0.4, 0.6, 0.8]
    accuracies = {"conv0": [92.0, 90.0, 80.0], "conv1": [92.5, 91.0, 85.0]}
    fig = plots.plot_sensitivity_scan(sparsities, accuracies, dense_accuracy=93.0)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["conv0", "conv1"]
    curve, dense, threshold = fig.axes[0].get_lines()
    assert list(curve.get_xdata()) == sparsities
    assert list(curve.get_ydata()) == accuracies["conv0"]
    assert set(dense.get_ydata()) == {93.0}
    assert list(threshold.get_ydata()) == pytest.approx([100 - 7.0 * 1.5] * 2)
    assert threshold.get_linestyle() == "--"
    assert all(ax.get_xlabel() == "sparsity (fraction pruned)" for ax in fig.axes)
    save_png(fig, tmp_path / "scan.png")


def test_sensitivity_scan_accepts_mit_lists_and_checks_lengths():
    """Does a list of lists (the MIT return value) work, and a length mismatch explain itself?"""
    fig = plots.plot_sensitivity_scan([0.5, 0.9], [[90, 80], [91, 70], [92, 60], [93, 50]], 93.5)
    assert [ax.get_title() for ax in fig.axes] == [f"layer {i}" for i in range(4)]
    with pytest.raises(ValueError, match="conv0: 1 accuracies for 2 sparsities"):
        plots.plot_sensitivity_scan([0.5, 0.9], {"conv0": [90.0]}, 93.0)


@pytest.mark.parametrize("count_nonzero_only", [False, True])
def test_num_parameters_one_bar_per_weight(model, tmp_path, count_nonzero_only):
    """One bar per weight tensor with its parameter count as the height?"""
    fig = plots.plot_num_parameters_distribution(model, count_nonzero_only=count_nonzero_only)
    (ax,) = fig.axes
    names = weight_names(model)
    heights = [patch.get_height() for patch in ax.patches[: len(names)]]
    assert heights == [dict(model.named_parameters())[n].numel() for n in names]
    assert [label.get_text() for label in ax.get_xticklabels()] == names
    if count_nonzero_only:
        nonzero = [patch.get_height() for patch in ax.patches[len(names) :]]
        assert nonzero[1] == int(model.backbone.conv1.weight.count_nonzero())
        save_png(fig, tmp_path / "params.png")


@pytest.mark.parametrize("shape", [(5, 5), (4, 3, 3, 3), (7,), (2, 3, 3)])
def test_mask_image(tmp_path, shape):
    """Does a small mask of any supported rank become an image with kept/pruned counts?"""
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    fig = plots.plot_mask(mask, title="demo")
    (ax,) = fig.axes
    assert ax.get_title().startswith("demo")
    assert f"{int(mask.sum())}/{mask.numel()} kept" in ax.get_title()
    image = ax.get_images()[0].get_array()
    finite = np.asarray(image)[~np.isnan(np.asarray(image, dtype=float))]
    assert finite.sum() == int(mask.sum())  # every kept element drawn once, nothing else
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["kept (nonzero)", "pruned (zero)"]
    save_png(fig, tmp_path / "mask.png")


def test_mask_rejects_other_ranks():
    """Is a scalar or 5-d tensor refused with its shape in the message?"""
    with pytest.raises(ValueError, match="2x1x1x1x1"):
        plots.plot_mask(torch.ones(2, 1, 1, 1, 1))


def test_comparison_table(tmp_path):
    """Are columns the keys in first-seen order and numbers formatted for reading?"""
    rows = [
        {"model": "dense", "accuracy": 92.954, "macs": 606164480, "size_mib": 35.2},
        {"model": "pruned", "accuracy": 92.1, "macs": 606164480, "sparsity": 0.7, "ok": True},
    ]
    fig = plots.plot_comparison_table(rows, title="Before / after")
    (ax,) = fig.axes
    assert ax.get_title() == "Before / after"
    cells = ax.tables[0].get_celld()
    header = [cells[0, c].get_text().get_text() for c in range(6)]
    assert header == ["model", "accuracy", "macs", "size_mib", "sparsity", "ok"]
    first = [cells[1, c].get_text().get_text() for c in range(6)]
    assert first == ["dense", "92.95", "606,164,480", "35.2", "", ""]
    assert cells[2, 5].get_text().get_text() == "yes"
    save_png(fig, tmp_path / "table.png")
    with pytest.raises(ValueError, match="rows is empty"):
        plots.plot_comparison_table([])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (9228362, "9,228,362"),
        (np.int64(42), "42"),
        (92.953, "92.95"),
        (0.7, "0.7"),
        (0.000123456, "0.0001235"),
        (123456.7, "123,457"),
        (torch.tensor(3.5), "3.5"),
        (math.nan, "nan"),
        (False, "no"),
        (None, ""),
        ("conv0", "conv0"),
    ],
)
def test_format_cell(value, text):
    """Do table cells read as a person would write the number?"""
    assert plots.format_cell(value) == text


@pytest.mark.parametrize("autograding", [False, True])
def test_notebook_shows_returned_figure(autograding, monkeypatch):
    """In IPython, does a returned figure render as PNG without pyplot being set up, and as
    text only while autograding (NBGRADER_EXECUTION set), where drawing would be wasted?"""
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    if autograding:
        monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    else:
        monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    shell = interactiveshell.InteractiveShell.instance()
    try:
        fig = plots.plot_mask(torch.eye(3))
        data, _ = shell.display_formatter.format(fig)
        if autograding:
            assert "image/png" not in data and data["text/plain"].startswith("<Figure")
        else:
            assert data["image/png"].startswith(PNG_SIGNATURE)
    finally:
        interactiveshell.InteractiveShell.clear_instance()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG header."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.filterwarnings("ignore:constrained_layout not applied")
def test_notebook_png_keeps_wide_tables_whole(monkeypatch):
    """Is a panel figure shown at its own size, and a table wider than its figure not cut?"""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    fig = plots.plot_mask(torch.eye(3))
    width, height = fig.get_size_inches() * fig.dpi
    assert png_size(plots._figure_png(fig)) == (round(width), round(height))
    wide = plots.plot_comparison_table([{"M" * 40: "i"}, {"M" * 40: "j"}])
    assert png_size(plots._figure_png(wide))[0] > wide.get_size_inches()[0] * wide.dpi
