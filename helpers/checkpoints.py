"""Finding, downloading, checking, saving and loading VGG checkpoints.

The dense checkpoint is state-dict compatible with the public MIT 6.5940 file
``vgg.cifar.pretrained.pth``: ``{"state_dict": {...}}`` with keys ``backbone.conv{i}.weight``,
``backbone.bn{i}.*`` and ``classifier.*``. It lives in ``data_dir()`` (``LAB_DATA``, default
``data/``); when missing it is downloaded (from ``LAB_CHECKPOINT_URL`` when set, then from
``MIRRORS``) and checked key by key and shape by shape before it is put in place. Under the
smoke profile no checkpoint is needed: a small VGG is trained on synthetic data in a few
seconds and cached as ``data_dir()/smoke-vgg.pth``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helpers.models import VGG
from helpers.profiles import VGG_ARCH, Profile, data_dir, get_device, get_profile

DENSE_CHECKPOINT = "vgg.cifar.pretrained.pth"
SMOKE_CHECKPOINT = "smoke-vgg.pth"

# Public copies of the MIT 6.5940 dense VGG, tried in order.
MIRRORS: tuple[str, ...] = (
    "https://hanlab18.mit.edu/files/course/labs/vgg.cifar.pretrained.pth",
    # A copy in a public GitHub repository (Git LFS, 36,951,439 bytes), pinned to a commit and
    # checked against the SHA-256 that its LFS pointer records.
    "https://github.com/pcacunar/edgeai_robotics_howest/raw/"
    "9eb5dd40f6bec2a125ad27bc118fabe4a98971b4/vgg.cifar.pretrained.pth",
)
MIRROR_SHA256: dict[str, str] = {
    MIRRORS[1]: "6b4aff21d828395aded52a8f2d3144ceda75d645eb9f57ea38e025ca28ded21a",
}


# An instructor's own copy, tried before the mirrors (a course web server, a shared drive as
# file:///...): classes of students downloading from a third party's quota is fragile. Its
# SHA-256, when set, is checked as well as the keys and shapes.
URL_VARIABLE = "LAB_CHECKPOINT_URL"
SHA256_VARIABLE = "LAB_CHECKPOINT_SHA256"


def checkpoint_sources() -> list[tuple[str, str | None]]:
    """(url, sha256 or None) in the order tried: ``LAB_CHECKPOINT_URL``, then ``MIRRORS``."""
    sources = [(url, MIRROR_SHA256.get(url)) for url in MIRRORS]
    own = os.environ.get(URL_VARIABLE, "").strip()
    if own:
        sources.insert(0, (own, os.environ.get(SHA256_VARIABLE, "").strip().lower() or None))
    return sources


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ",".join(str(n) for n in shape) + ")"


def verify_state_dict(
    state_dict: Mapping[str, Any], model: nn.Module, path: str | Path | None = None
) -> None:
    """Raise one ``CheckpointError`` naming ``path`` and every key or shape that does not fit.

    Lists the keys the model needs but the file lacks, the keys the file has but the model
    does not know, and each shape mismatch (``file has (...), model expects (...)``).
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = []
    for key, tensor in expected.items():
        if key not in state_dict:
            continue
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            mismatched.append(f"{key}: file has a {type(value).__name__}, model expects a tensor")
        elif value.shape != tensor.shape:
            mismatched.append(
                f"{key}: file has {_shape(value.shape)}, model expects {_shape(tensor.shape)}"
            )
    if not (missing or unexpected or mismatched):
        return
    lines = [f"checkpoint {path or '(in memory)'} does not fit the model:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}):")
        lines.extend(f"    {line}" for line in mismatched)
    arch = getattr(model, "arch", None)
    if arch is not None:
        lines.append(f"The model is VGG(arch={tuple(arch)!r}).")
    lines.append(
        "Is this a checkpoint of another model, or a file cut short? Delete it and download "
        "it again (`python -m helpers checkpoint`) or train one (`python -m helpers train-dense`)."
    )
    raise CheckpointError("\n".join(lines))


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded file: ``obj["state_dict"]`` (MIT layout) or ``obj`` itself."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict: expected "
            '{"state_dict": {name: tensor}} (the MIT layout) or {name: tensor}.'
        )
    state_dict = dict(obj)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


def _looks_like_torch_file(path: Path) -> bool:
    """Whether the file starts like a torch.save file: a zip archive or a legacy pickle."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({error.strerror}): ask its owner to make it "
            f"readable (chmod a+r {path}), or copy it somewhere of yours and set LAB_DATA there"
        ) from error
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_checkpoint(path: str | Path) -> Any:
    """The content of a torch checkpoint file, loaded safely (tensors only) on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (an error page saved by a failed "
            "download?); delete it and download it again (`python -m helpers checkpoint`) or "
            "train one (`python -m helpers train-dense`)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip()
        message = text.splitlines()[0] if text else ""
        hint = (
            "It holds Python objects other than tensors and plain containers, which are not "
            "unpickled for safety; if you trust it, re-save its state dict as "
            "torch.save({'state_dict': state_dict}, path)."
            if "weights only" in text.lower() or "weights_only" in text
            else "It is not a PyTorch checkpoint, or it was cut short; delete it and download "
            "it again (`python -m helpers checkpoint`)."
        )
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(error).__name__}: {message}) {hint}"
        ) from error


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (MIT layout or a bare state dict), on the CPU."""
    path = Path(path)
    return _extract_state_dict(read_checkpoint(path), path)


def load_dense_state_dict(path: str | Path, source: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` once it fits the course VGG key by key and shape by shape
    (``CheckpointError`` naming ``source``, default ``path``, otherwise)."""
    state_dict = load_state_dict_file(path)
    with torch.device("meta"):  # shapes only: no weights drawn from the global generator
        reference = VGG(VGG_ARCH)
    verify_state_dict(state_dict, reference, source or path)
    return state_dict


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load ``path`` into ``model`` after checking every key and shape; return its ``meta``."""
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict = _extract_state_dict(obj, path)
    verify_state_dict(state_dict, model, path)
    model.load_state_dict(state_dict)
    meta = obj.get("meta") if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through a unique temporary file, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp_name)
        _publish(Path(tmp_name), path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def _publish(tmp: Path, path: Path) -> None:
    """Move ``tmp`` (made by ``mkstemp``: readable by its owner only) to ``path`` with the
    permissions a plain ``open`` would have given it (the umask's), so that a checkpoint in a
    shared ``LAB_DATA`` can be read by the other users."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_checkpoint(model: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Write ``{"state_dict": ..., "meta": meta}`` (MIT layout, CPU tensors) atomically."""
    state_dict = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in model.state_dict().items()
    }
    return save_atomic({"state_dict": state_dict, "meta": meta}, path)


def _missing_checkpoint_message(path: Path, failures: list[str]) -> str:
    tried = "\n".join(f"  - {line}" for line in failures) or "  (no mirror configured)"
    return (
        f"The dense VGG checkpoint is missing: there is no file {path}, and no mirror could "
        f"provide it:\n{tried}\n"
        "Two ways out:\n"
        f"  1. put a copy of {DENSE_CHECKPOINT} (from {MIRRORS[0]}) at {path},\n"
        f"     or set LAB_DATA to the folder that holds it, or {URL_VARIABLE} to where your\n"
        "     course keeps a copy (a URL, or file:///path);\n"
        "  2. train one: `python -m helpers train-dense` (about 20 epochs of CIFAR-10; minutes "
        "on a GPU, hours on a CPU).\n"
        "Or run the lab with LAB_PROFILE=smoke, which needs no checkpoint (numbers are "
        "meaningless)."
    )


def find_or_download_checkpoint(root: str | Path | None = None) -> Path:
    """The dense checkpoint's path: ``root/vgg.cifar.pretrained.pth``, downloaded if missing.

    ``root`` defaults to ``data_dir()``. A download goes to a temporary file that must load and
    match a fresh VGG key by key and shape by shape before it is moved in place. When the file
    is missing and every mirror fails, raises ``CheckpointError`` saying how to get one.
    """
    root = Path(root) if root is not None else data_dir()
    path = root / DENSE_CHECKPOINT
    if path.is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for url, sha256 in checkpoint_sources():
        fd, tmp_name = tempfile.mkstemp(prefix=DENSE_CHECKPOINT + ".", suffix=".part", dir=root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            print(f"downloading {DENSE_CHECKPOINT} from {url}")
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=sha256, progress=True)
            load_dense_state_dict(tmp, source=url)
            _publish(tmp, path)
            return path
        except CheckpointError as error:
            failures.append(f"{url}: {error}")
        except Exception as error:  # network errors come in many types; report, try the next
            failures.append(f"{url}: {type(error).__name__}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    raise CheckpointError(_missing_checkpoint_message(path, failures))


def _smoke_config(profile: Profile) -> dict[str, Any]:
    """The settings that make up the cached smoke model; a change means retraining."""
    from helpers import data
    from helpers.train import SMOKE_RECIPE

    # A checksum of a few synthetic images: it changes when the generator does.
    sample = data.make_synthetic(16, 1, seed=0)["train_images"].to(torch.int64)  # (16, 3, 32, 32)
    weights = torch.arange(1, sample.numel() + 1).view_as(sample) % 9973
    return {
        "kind": "smoke-dense",
        "version": 1,
        "arch": list(profile.arch),
        "recipe": asdict(SMOKE_RECIPE),
        "data": [getattr(data, name, None) for name in ("SYNTHETIC_TRAIN", "SYNTHETIC_TEST")],
        "data_checksum": int((sample * weights).sum()),
    }


def _smoke_model(profile: Profile) -> VGG:
    """The small dense VGG for the smoke profile: cached, else trained (seconds, on the CPU)."""
    from helpers.train import SMOKE_RECIPE, train_dense

    path = data_dir() / SMOKE_CHECKPOINT
    config = _smoke_config(profile)
    model = VGG(profile.arch)
    if path.is_file():
        try:
            meta = load_checkpoint(model, path)
            if meta.get("smoke") == config:
                return model
        except CheckpointError:
            pass  # stale or corrupt: rebuild below
    # Trained on the CPU whatever the device, so that machines agree on the smoke model.
    print(f"training the small smoke-profile VGG on synthetic data (once, seconds): {path}")
    building = path.with_name(f"{path.name}.{os.getpid()}.building")
    with torch.random.fork_rng():  # train_dense seeds the global generators
        result = train_dense(
            profile,
            **asdict(SMOKE_RECIPE),
            out=building,
            resume=False,
            seed=0,
            device="cpu",
            verbose=False,
        )
    meta = read_checkpoint(building).get("meta", {})
    save_checkpoint(result.model, path, **meta, smoke=config)
    building.unlink(missing_ok=True)
    return result.model


def load_dense_model(
    profile: Profile | str | None = None, device: torch.device | str | None = None
) -> VGG:
    """The dense VGG of the profile, on ``device`` (default: best available), in eval mode.

    ``full`` and ``quick``: the pretrained checkpoint (found, downloaded and verified).
    ``smoke``: a small VGG trained for a few seconds on synthetic data, cached in ``data_dir()``.
    """
    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    device = torch.device(device) if device is not None else get_device()
    if profile.dataset == "synthetic":
        model = _smoke_model(profile)
    else:
        model = VGG(profile.arch)
        load_checkpoint(model, find_or_download_checkpoint())
    return model.to(device).eval()
