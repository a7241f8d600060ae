"""Which profile, data folder and device does the library pick, and does it fail clearly?"""

from __future__ import annotations

import pytest
import torch

from helpers import profiles


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("LAB_PROFILE", "NBGRADER_EXECUTION", "LAB_DATA", "LAB_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_profile_is_full(clean_env):
    """Without any variable, does a student get the real lab?"""
    assert profiles.get_profile().name == "full"


def test_nbgrader_execution_implies_smoke(clean_env):
    """Does autograding default to the fast synthetic profile?"""
    clean_env.setenv("NBGRADER_EXECUTION", "autograde")
    assert profiles.get_profile().name == "smoke"


def test_lab_profile_wins_over_nbgrader(clean_env):
    """Can an instructor grade in `full` by setting LAB_PROFILE?"""
    clean_env.setenv("NBGRADER_EXECUTION", "autograde")
    clean_env.setenv("LAB_PROFILE", " Full ")
    assert profiles.get_profile().name == "full"


def test_unknown_profile_names_the_choices(clean_env):
    """Does a typo in LAB_PROFILE say which names exist?"""
    clean_env.setenv("LAB_PROFILE", "fast")
    with pytest.raises(profiles.ProfileError) as error:
        profiles.get_profile()
    for name in profiles.PROFILES:
        assert name in str(error.value)
    assert "'fast'" in str(error.value)


def test_data_dir_follows_lab_data(clean_env, tmp_path):
    """Is LAB_DATA honoured, and is data/ in the repository the default?"""
    assert profiles.data_dir() == profiles.REPO_ROOT / "data"
    clean_env.setenv("LAB_DATA", str(tmp_path))
    assert profiles.data_dir() == tmp_path.resolve()


def test_device_override(clean_env):
    """Can LAB_DEVICE force the CPU on a machine with an accelerator?"""
    clean_env.setenv("LAB_DEVICE", "cpu")
    assert profiles.get_device() == torch.device("cpu")


def test_a_device_that_is_not_here_is_a_clear_error(clean_env, monkeypatch, capsys, tmp_path):
    """LAB_DEVICE=cuda on a machine without a GPU (a laptop), a misspelt device, and
    ``train-dense --device cuda`` there: each a ProfileError naming the setting (exit 2 for the
    command), not a CUDA traceback later."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setenv("LAB_DEVICE", "cuda")
    with pytest.raises(profiles.ProfileError, match="LAB_DEVICE=cuda asks for a CUDA GPU"):
        profiles.get_device()
    clean_env.setenv("LAB_DEVICE", "gpu")
    with pytest.raises(profiles.ProfileError, match="LAB_DEVICE=gpu is not a device PyTorch knows"):
        profiles.get_device()
    clean_env.delenv("LAB_DEVICE")
    from helpers.train import train_dense_cli

    out = str(tmp_path / "vgg.pth")
    assert train_dense_cli(["--profile", "smoke", "--device", "cuda", "--out", out]) == 2
    assert "device 'cuda' asks for a CUDA GPU" in capsys.readouterr().err


def test_profiles_keep_the_lab_questions():
    """Do quick and full use the same model, so quick answers the same questions?"""
    assert profiles.PROFILES["quick"].arch == profiles.PROFILES["full"].arch
    assert profiles.PROFILES["smoke"].dataset == "synthetic"
    assert all(0 < s < 1 for p in profiles.PROFILES.values() for s in p.scan_sparsities)


def test_full_on_a_cpu_warns_and_says_how_to_switch():
    """``full`` is the default and takes hours on a CPU: the set-up cells' line says so there,
    and only there."""
    full, quick = profiles.get_profile("full"), profiles.get_profile("quick")
    warned = profiles.expected_time(full, "cpu")
    assert warned.startswith(f"expected minutes for the whole lab: {full.expected_minutes}\n")
    assert "WARNING" in warned and "LAB_PROFILE=quick" in warned
    for profile, device in ((full, "cuda"), (full, torch.device("mps")), (quick, "cpu")):
        line = profiles.expected_time(profile, device)
        assert line == f"expected minutes for the whole lab: {profile.expected_minutes}"
