"""Do checkpoints load only when they fit, and say what is wrong and how to get one if not?"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

import helpers.checkpoints as checkpoints
import helpers.train
from helpers.checkpoints import (
    DENSE_CHECKPOINT,
    MIRRORS,
    SMOKE_CHECKPOINT,
    CheckpointError,
    find_or_download_checkpoint,
    load_checkpoint,
    load_dense_model,
    load_state_dict_file,
    save_checkpoint,
    verify_state_dict,
)
from helpers.data import get_dataloaders
from helpers.models import VGG
from helpers.profiles import SMALL_VGG_ARCH, get_profile
from helpers.train import evaluate

TINY_ARCH = (8, "M", 16, "M")


pytestmark = pytest.mark.usefixtures("lab_data")  # its own LAB_DATA, the CPU (conftest)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model with random weights and BN statistics, so that a bad load would show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            else:
                tensor.normal_(0, 0.1)
    return model.eval()


def must_not_be_called(*args, **kwargs):
    raise AssertionError("must not be called (no download, no training)")


def test_mit_layout_checkpoint_loads_and_gives_the_same_outputs(tmp_path):
    """Does a {"state_dict": ...} file, as the MIT lab saves it, load into a fresh VGG exactly?"""
    source = randomised(VGG())
    path = tmp_path / "mit.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # the MIT layout, written by hand
    fresh = VGG().eval()
    load_checkpoint(fresh, path)
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(fresh(x), source(x), rtol=0, atol=0)
    for key, value in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_bare_state_dict_and_dataparallel_prefix_load(tmp_path):
    """Are a bare state dict and one saved from nn.DataParallel ("module." keys) accepted?"""
    source = randomised(VGG(TINY_ARCH))
    bare, wrapped = tmp_path / "bare.pth", tmp_path / "wrapped.pth"
    torch.save(source.state_dict(), bare)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)
    for path in (bare, wrapped):
        state_dict = load_state_dict_file(path)
        assert state_dict.keys() == source.state_dict().keys()
        assert all(torch.equal(state_dict[k], v) for k, v in source.state_dict().items())


def test_save_checkpoint_writes_the_mit_layout_with_meta(tmp_path):
    """Does save_checkpoint write {"state_dict", "meta"} that plain torch.load reads back?"""
    source = randomised(VGG(TINY_ARCH))
    path = save_checkpoint(source, tmp_path / "sub" / "ckpt.pth", test_accuracy=91.5, arch=["x"])
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "meta"}
    assert raw["meta"] == {"test_accuracy": 91.5, "arch": ["x"]}
    assert all(torch.equal(raw["state_dict"][k], v) for k, v in source.state_dict().items())
    assert load_checkpoint(VGG(TINY_ARCH), path) == raw["meta"]
    assert not list(path.parent.glob("*.tmp"))


def test_wrong_key_names_the_file_and_both_keys(tmp_path):
    """Does a renamed key show up as missing and as unexpected, with the file's name?"""
    state_dict = VGG().state_dict()
    state_dict["classifier.weights"] = state_dict.pop("classifier.weight")
    path = tmp_path / "renamed.pth"
    torch.save({"state_dict": state_dict}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(VGG(), path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys (1): classifier.weight" in message
    assert "unexpected keys (1): classifier.weights" in message


def test_wrong_shape_names_the_file_key_and_both_shapes(tmp_path):
    """Does a conv of the wrong size give 'file has (...), model expects (...)' for that key?"""
    state_dict = VGG().state_dict()
    state_dict["backbone.conv3.weight"] = torch.zeros(256, 128, 3, 3)
    path = tmp_path / "wrong-shape.pth"
    torch.save({"state_dict": state_dict}, path)
    model = VGG()
    before = model.state_dict()["backbone.conv3.weight"].clone()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert str(path) in message
    assert "backbone.conv3.weight: file has (256,128,3,3), model expects (256,256,3,3)" in message
    assert torch.equal(model.state_dict()["backbone.conv3.weight"], before)  # untouched


def test_verify_lists_every_problem_at_once():
    """Are all missing keys and all shape mismatches of another architecture in one error?"""
    small = VGG(SMALL_VGG_ARCH).state_dict()
    with pytest.raises(CheckpointError) as info:
        verify_state_dict(small, VGG(), "small.pth")
    message = str(info.value)
    assert "small.pth" in message
    num_mismatches = sum(
        1 for k, v in VGG().state_dict().items() if k in small and small[k].shape != v.shape
    )
    assert f"shape mismatches ({num_mismatches})" in message
    assert message.count("model expects") == num_mismatches
    verify_state_dict(VGG().state_dict(), VGG(), "same.pth")  # a fitting one passes silently


def test_not_a_torch_file_is_named(tmp_path):
    """Is an HTML error page saved as .pth reported as not a checkpoint, naming the file?"""
    path = tmp_path / "vgg.cifar.pretrained.pth"
    path.write_text("<html><body>404 Not Found</body></html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        load_checkpoint(VGG(), path)
    assert str(path) in str(info.value)


def test_non_state_dict_content_and_missing_file(tmp_path):
    """Are a file holding a list and a path with no file both CheckpointErrors naming the file?"""
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state dict") as info:
        load_checkpoint(VGG(), path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(VGG(), tmp_path / "absent.pth")


def test_find_returns_a_present_file_without_downloading(lab_data, monkeypatch):
    """Is a checkpoint already in LAB_DATA used as is, with no network?"""
    monkeypatch.setattr(torch.hub, "download_url_to_file", must_not_be_called)
    lab_data.mkdir(parents=True)
    (lab_data / DENSE_CHECKPOINT).write_bytes(b"x")
    assert find_or_download_checkpoint() == lab_data / DENSE_CHECKPOINT


def test_no_file_and_no_network_names_both_ways_out(lab_data, monkeypatch):
    """With no file and no network, does the error name the path, LAB_DATA and train-dense?"""
    tried = []

    def offline(url, dst, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError) as info:
        find_or_download_checkpoint()
    message = str(info.value)
    assert str(lab_data / DENSE_CHECKPOINT) in message
    assert "LAB_DATA" in message
    assert "python -m helpers train-dense" in message
    assert "LAB_PROFILE=smoke" in message
    assert tried == list(MIRRORS)
    assert all(url in message for url in MIRRORS)
    assert list(lab_data.iterdir()) == []  # no partial download left behind


def test_download_is_verified_then_moved_in_place(lab_data, monkeypatch):
    """Does a good download land at LAB_DATA/vgg.cifar.pretrained.pth and load?"""
    source = randomised(VGG())

    def fake_download(url, dst, *args, **kwargs):
        torch.save({"state_dict": source.state_dict()}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = find_or_download_checkpoint()
    assert path == lab_data / DENSE_CHECKPOINT
    assert sorted(p.name for p in lab_data.iterdir()) == [DENSE_CHECKPOINT]
    monkeypatch.setattr(torch.hub, "download_url_to_file", must_not_be_called)
    model = load_dense_model("full", device="cpu")
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_the_courses_own_copy_is_tried_first_and_checked(lab_data, monkeypatch, tmp_path):
    """LAB_CHECKPOINT_URL (here a file:// URL, through torch.hub's real download) is used
    before any mirror; with LAB_CHECKPOINT_SHA256 a file of other bytes is refused, and the
    mirrors are tried next."""
    source = randomised(VGG())
    hosted = tmp_path / "course-copy.pth"
    torch.save({"state_dict": source.state_dict()}, hosted)
    digest = hashlib.sha256(hosted.read_bytes()).hexdigest()
    monkeypatch.setenv("LAB_CHECKPOINT_URL", hosted.as_uri())
    monkeypatch.setenv("LAB_CHECKPOINT_SHA256", "0" * 64)
    tried = []
    real = torch.hub.download_url_to_file

    def only_the_course(url, dst, *args, **kwargs):
        tried.append(url)
        if url != hosted.as_uri():
            raise urllib.error.URLError("no network")
        return real(url, dst, *args, **kwargs)

    monkeypatch.setattr(torch.hub, "download_url_to_file", only_the_course)
    with pytest.raises(CheckpointError) as info:
        find_or_download_checkpoint()
    assert tried == [hosted.as_uri(), *MIRRORS]
    assert "LAB_CHECKPOINT_URL" in str(info.value) and hosted.as_uri() in str(info.value)
    assert list(lab_data.iterdir()) == []
    monkeypatch.setenv("LAB_CHECKPOINT_SHA256", digest.upper())
    tried.clear()
    assert find_or_download_checkpoint() == lab_data / DENSE_CHECKPOINT
    assert tried == [hosted.as_uri()]
    model = load_dense_model("full", device="cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_download_of_the_wrong_model_is_refused(lab_data, monkeypatch):
    """Is a downloaded file that does not fit the VGG rejected, with nothing put in place?"""

    def wrong_download(url, dst, *args, **kwargs):
        torch.save({"state_dict": VGG(SMALL_VGG_ARCH).state_dict()}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", wrong_download)
    with pytest.raises(CheckpointError) as info:
        find_or_download_checkpoint()
    assert "model expects" in str(info.value)
    assert list(lab_data.iterdir()) == []


def test_load_dense_model_full_reports_a_missing_checkpoint(monkeypatch):
    """Does the full profile stop with the how-to message rather than switch profile?"""
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("off"))
    )
    with pytest.raises(CheckpointError, match="train-dense"):
        load_dense_model("full", device="cpu")


@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory):
    """Build the smoke model once, for real, in a module-wide LAB_DATA; time it."""
    root = tmp_path_factory.mktemp("smoke-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_DATA", str(root))
        start = time.perf_counter()
        model = load_dense_model("smoke", device="cpu")
        seconds = time.perf_counter() - start
    return root, model, seconds


def test_smoke_model_is_small_and_above_chance(smoke_build, monkeypatch):
    """Is the smoke VGG the small arch, cached, and well above chance on its test split?"""
    root, model, seconds = smoke_build
    monkeypatch.setenv("LAB_DATA", str(root))
    assert model.arch == SMALL_VGG_ARCH and not model.training
    assert (root / SMOKE_CHECKPOINT).is_file()
    assert not list(root.glob("*.partial"))
    accuracy = evaluate(model, get_dataloaders("smoke", device="cpu")["test"], verbose=False)
    print(f"smoke model: built in {seconds:.1f} s, synthetic test accuracy {accuracy:.1f}%")
    assert accuracy > 50  # chance is 10%


def test_smoke_model_is_cached(smoke_build, monkeypatch):
    """Does a second load come from data/smoke-vgg.pth, identical, without training?"""
    root, model, _ = smoke_build
    monkeypatch.setenv("LAB_DATA", str(root))
    monkeypatch.setattr(helpers.train, "train_dense", must_not_be_called)
    again = load_dense_model("smoke", device="cpu")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("problem", ["corrupt", "stale", "wrong-arch"])
def test_bad_smoke_cache_is_rebuilt(lab_data, monkeypatch, problem):
    """Is a corrupt, stale or wrong-shaped smoke cache rebuilt instead of used or fatal?"""
    lab_data.mkdir(parents=True)
    path = lab_data / SMOKE_CHECKPOINT
    if problem == "corrupt":
        path.write_bytes(b"\x00" * 10)
    elif problem == "stale":
        save_checkpoint(VGG(SMALL_VGG_ARCH), path, smoke={"version": 0})
    else:
        save_checkpoint(VGG(TINY_ARCH), path, smoke=checkpoints._smoke_config(get_profile("smoke")))
    calls = []

    def fake_train_dense(profile, **kwargs):
        calls.append(kwargs)
        model = randomised(VGG(profile.arch), seed=1)
        save_checkpoint(model, kwargs["out"])
        return helpers.train.DenseResult(model, 50.0, Path(kwargs["out"]), 0.0)

    monkeypatch.setattr(helpers.train, "train_dense", fake_train_dense)
    model = load_dense_model("smoke", device="cpu")
    assert len(calls) == 1 and calls[0]["device"] == "cpu" and calls[0]["seed"] == 0
    assert model.arch == SMALL_VGG_ARCH
    monkeypatch.setattr(helpers.train, "train_dense", must_not_be_called)
    load_dense_model("smoke", device="cpu")  # the rebuilt cache is now accepted


def test_mirrors_include_the_mit_url():
    """Is the course's own public URL the first mirror tried?"""
    assert MIRRORS[0] == "https://hanlab18.mit.edu/files/course/labs/vgg.cifar.pretrained.pth"
    assert all(url.endswith(DENSE_CHECKPOINT) for url in MIRRORS)


def test_saved_and_downloaded_checkpoints_are_as_readable_as_the_umask_allows(
    lab_data, monkeypatch
):
    """A checkpoint written through a temporary file (``save_checkpoint``, a download) gets the
    permissions a plain ``open`` gives (0o644 under umask 022), not ``mkstemp``'s 0o600: the
    other users of a shared LAB_DATA can read it."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(VGG(TINY_ARCH), lab_data / "tiny.pth")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        source = randomised(VGG())
        monkeypatch.setattr(
            torch.hub,
            "download_url_to_file",
            lambda url, dst, *a, **k: torch.save({"state_dict": source.state_dict()}, dst),
        )
        downloaded = find_or_download_checkpoint()
        assert stat.S_IMODE(downloaded.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_an_unreadable_checkpoint_says_to_make_it_readable(tmp_path, monkeypatch):
    """A file there but not readable (another user's, mode 0600) is a CheckpointError saying
    what to do, not a bare PermissionError. (``open`` is replaced: root reads any file.)"""
    path = save_checkpoint(VGG(TINY_ARCH), tmp_path / "theirs.pth")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoints, "open", denied, raising=False)
    with pytest.raises(CheckpointError, match=r"cannot be read \(Permission denied\).*chmod a\+r"):
        load_checkpoint(VGG(TINY_ARCH), path)


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_the_first_load_of_the_dense_model_draws_from_the_global_generator_as_later_ones(
    lab_data, monkeypatch, profile
):
    """The first load (which trains the smoke model, or downloads the full one) leaves the
    global generator where a later, cached load does: a lab seeded before loading draws the
    same numbers afterwards (random pruning masks) on either run."""
    source = randomised(VGG())
    monkeypatch.setattr(
        torch.hub,
        "download_url_to_file",
        lambda url, dst, *a, **k: torch.save({"state_dict": source.state_dict()}, dst),
    )
    draws = []
    for _ in range(2):  # first: trains or downloads; second: from the cache
        torch.manual_seed(1)
        load_dense_model(profile, device="cpu")
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])


def test_checkpoint_command_loads_the_file_it_finds(lab_data, monkeypatch, capsys):
    """``python -m helpers checkpoint`` fails (exit 1, saying why) on a file that is there but
    broken, an error page or another model, instead of reporting it found; it succeeds on a
    good one; and it takes no arguments (``--help`` downloads nothing)."""
    from helpers.__main__ import main

    monkeypatch.setattr(torch.hub, "download_url_to_file", must_not_be_called)
    assert main(["checkpoint", "--help"]) == 0
    assert main(["checkpoint", "now"]) == 2
    lab_data.mkdir(parents=True)
    path = lab_data / DENSE_CHECKPOINT
    path.write_text("<html><body>404 Not Found</body></html>")
    assert main(["checkpoint"]) == 1
    assert "not a PyTorch checkpoint" in capsys.readouterr().err
    torch.save({"state_dict": VGG(SMALL_VGG_ARCH).state_dict()}, path)
    assert main(["checkpoint"]) == 1
    assert "does not fit the model" in capsys.readouterr().err
    torch.save({"state_dict": randomised(VGG()).state_dict()}, path)
    assert main(["checkpoint"]) == 0
    assert f"dense checkpoint: {path} (loads into the course VGG" in capsys.readouterr().out
