"""CIFAR-10: prepared once into a uint8 tensor cache, then served from memory.

``prepare_cifar10`` turns any supported copy of CIFAR-10 into one file,
``<data_dir>/cifar10_uint8.pt`` (``LAB_DATA``, default ``data/``)::

    {"train_images": uint8 (50000, 3, 32, 32), "train_labels": int64 (50000,),
     "test_images":  uint8 (10000, 3, 32, 32), "test_labels":  int64 (10000,),
     "source": str}

Supported copies: torchvision's download (md5-verified), the torchvision folder
``cifar-10-batches-py`` (or its parent, or ``cifar-10-python.tar.gz``), and an image-folder
tree ``train/<class>/*`` + ``test/<class>/*`` of 32x32 PNG or JPEG files, unpacked or as a
``.tar.gz``. Image-folder order: classes in ``CIFAR10_CLASSES`` order, files sorted by name
within a class. The torchvision format keeps its own order.

``DeviceLoader`` moves the tensors to the device once and augments whole batches there
(random crop with zero padding 4, horizontal flip), like airbench. It yields float32 in
[0, 1] without mean/std normalisation, which is what the MIT 6.5940 VGG checkpoint expects.
``get_dataloaders`` builds the loaders of a profile; ``cifar10_torchvision_dataset`` is the
ordinary ``torch.utils.data`` path over the same cache.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from helpers.profiles import Profile, data_dir, get_device, get_profile

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CACHE_NAME = "cifar10_uint8.pt"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TORCHVISION_FOLDER = "cifar-10-batches-py"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")

# torchvision's md5 sums of the files in cifar-10-batches-py (torchvision.datasets.CIFAR10).
_TORCHVISION_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_TORCHVISION_BATCHES = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}

SYNTHETIC_TRAIN = 2048  # images in the smoke profile's synthetic training split
SYNTHETIC_TEST = 512
SYNTHETIC_SEED = 0
SPLIT_SEED = 0  # fixes the validation split and the test subset for every run

_GET_DATA_HELP = (
    "Get it with one of:\n"
    "  python -m helpers data              download from the CIFAR-10 site (md5-verified)\n"
    "  python -m helpers data --from PATH  use a local copy: cifar-10-python.tar.gz, a\n"
    "                                      cifar-10-batches-py folder, or an image folder\n"
    "                                      (or .tar.gz) with train/<class>/ and test/<class>/\n"
    "  make data                           the same, from the repository root\n"
    "or run with LAB_PROFILE=smoke (synthetic data, nothing to download). "
    "LAB_DATA sets where the data lives (default: data/ in the repository)."
)

# A file to decode: bytes already read (from an archive) or a path on disk.
_Source = bytes | Path
# split -> class folder name -> [(file name, name shown in errors, source)]
_Tree = dict[str, dict[str, list[tuple[str, str, _Source]]]]


class DataError(RuntimeError):
    """The data is missing or unreadable; the message names the file and the fix."""


# --------------------------------------------------------------------------- preparing


def prepare_cifar10(
    source: str | Path | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Decode CIFAR-10 once into ``root/cifar10_uint8.pt`` and return that path.

    Args:
        source: ``None`` downloads with torchvision (md5-verified) into ``root``; otherwise a
            ``.tar.gz``/``.tgz`` archive, an image-folder tree, or a torchvision-format folder.
        root: where the cache goes (default ``helpers.profiles.data_dir()``).
        progress: show tqdm bars while decoding.
        force: with ``source=None``, rebuild even when a valid cache already exists.

    Raises:
        DataError: naming the file and the fix (missing folder, corrupt image, wrong size,
            missing or unknown class folder, no network).
    """
    root = Path(root).expanduser() if root is not None else data_dir()
    cache = root / CACHE_NAME
    if source is None:
        if cache.exists() and not force:
            try:
                load_cifar10(root)
                return cache
            except DataError:
                pass  # unreadable: rebuild it below
        data = _download_torchvision(root, progress)
    else:
        data = _read_source(Path(source).expanduser(), progress)
    _write_cache(data, cache)
    return cache


def _read_source(source: Path, progress: bool) -> dict:
    """Decode a user-given copy: an archive, an image-folder tree or a torchvision folder."""
    if not source.exists():
        raise DataError(
            f"{source} does not exist. Give --from the path of a CIFAR-10 copy: a .tar.gz of "
            "an image folder, an image folder with train/<class>/ and test/<class>/, or a "
            f"{TORCHVISION_FOLDER} folder (or cifar-10-python.tar.gz)."
        )
    if source.is_file():
        return _read_archive(source, progress)
    found = _find_in_folder(source)
    if found is None:
        raise DataError(
            f"{source} holds neither train/ and test/ class folders (an image-folder copy) nor "
            f"a {TORCHVISION_FOLDER} folder (a torchvision copy), nor one of them one or two "
            "levels down. Point --from at the folder that holds train/ and test/, or at "
            f"{TORCHVISION_FOLDER}."
        )
    kind, folder = found
    if kind == "torchvision":
        return _decode_torchvision(
            _torchvision_files(folder), str(folder), f"torchvision folder {folder.resolve()}"
        )
    tree = _folder_tree(folder)
    return _decode_tree(tree, progress, str(folder), f"image folder {folder.resolve()}")


def _torchvision_files(folder: Path) -> dict[str, _Source]:
    """The batch files present in a ``cifar-10-batches-py`` folder, by name."""
    names = (*_TORCHVISION_MD5, "batches.meta")
    return {name: folder / name for name in names if (folder / name).is_file()}


def _find_in_folder(folder: Path, depth: int = 2) -> tuple[str, Path] | None:
    """The shallowest image-folder tree or torchvision folder at or below ``folder``."""
    level = [folder]
    for _ in range(depth + 1):
        for d in level:
            if (d / "data_batch_1").is_file() and (d / "test_batch").is_file():
                return "torchvision", d
            if (d / TORCHVISION_FOLDER).is_dir():
                return "torchvision", d / TORCHVISION_FOLDER
            if (d / "train").is_dir() or (d / "test").is_dir():
                return "images", d
        level = [
            s for d in level for s in sorted(d.iterdir()) if s.is_dir() and not _hidden(s.name)
        ]
    return None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _folder_tree(root: Path) -> _Tree:
    """List ``root/{train,test}/<class>/*.{png,jpg,jpeg}`` without decoding anything."""
    tree: _Tree = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"missing folder {split_dir}: an image-folder copy of CIFAR-10 needs both "
                f"{root / 'train'}/<class>/ and {root / 'test'}/<class>/. The copy looks "
                "incomplete: re-extract or re-download it."
            )
        tree[split] = {
            d.name: [
                (f.name, str(f), f)
                for f in d.iterdir()
                if f.is_file() and not _hidden(f.name) and f.suffix.lower() in IMAGE_SUFFIXES
            ]
            for d in split_dir.iterdir()
            if d.is_dir() and not _hidden(d.name)
        }
    return tree


def _read_archive(archive: Path, progress: bool) -> dict:
    """Decode a tar archive of an image-folder tree or of ``cifar-10-batches-py``.

    Reads the archive once, in memory: no extraction to disk (60,000 small files).
    """
    images: dict[tuple[str, ...], bytes] = {}
    batches: dict[tuple[str, ...], bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tqdm(tar, desc=f"reading {archive.name}", unit=" files", disable=not progress)
            for member in members:
                if not member.isfile():
                    continue
                parts = tuple(
                    p for p in PurePosixPath(member.name).parts if p not in ("", ".", "/")
                )
                if not parts or any(_hidden(p) for p in parts):
                    continue
                is_image = (
                    len(parts) >= 3
                    and parts[-3] in SPLITS
                    and PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES
                )
                is_batch = parts[-1] in _TORCHVISION_MD5 or parts[-1] == "batches.meta"
                if is_image or is_batch:
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    (images if is_image else batches)[parts] = data
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"cannot read the archive {archive}: {e}. It is not a tar archive (.tar.gz, .tgz, "
            ".tar) or it is truncated or corrupt: download it again (compare its sha256 with "
            "data/manifest.json), or unpack it yourself and pass the folder to --from."
        ) from e

    # The image-folder root is the shallowest prefix P with files at P/train/... and P/test/...
    splits_by_prefix: dict[tuple[str, ...], set[str]] = {}
    for parts in images:
        splits_by_prefix.setdefault(parts[:-3], set()).add(parts[-3])
    prefixes = sorted(splits_by_prefix, key=lambda p: (len(p), p))
    complete = [p for p in prefixes if splits_by_prefix[p] == set(SPLITS)]
    if complete:
        prefix = complete[0]
        where = f"{archive}:{'/'.join(prefix)}" if prefix else str(archive)
        tree: _Tree = {split: {} for split in SPLITS}
        for parts, data in images.items():
            if parts[:-3] == prefix:
                name = "/".join(parts)
                tree[parts[-3]].setdefault(parts[-2], []).append(
                    (parts[-1], f"{archive}:{name}", data)
                )
        return _decode_tree(tree, progress, where, f"archive {where}")

    batch_dirs = sorted({parts[:-1] for parts in batches}, key=lambda p: (len(p), p))
    for prefix in batch_dirs:
        files = {parts[-1]: data for parts, data in batches.items() if parts[:-1] == prefix}
        if "data_batch_1" in files and "test_batch" in files:
            where = f"{archive}:{'/'.join(prefix)}" if prefix else str(archive)
            return _decode_torchvision(files, where, f"archive {where}")

    if prefixes:
        found = "/".join((*prefixes[0], *sorted(splits_by_prefix[prefixes[0]])))
        raise DataError(
            f"the archive {archive} has images under {found}/ only: an image-folder copy needs "
            "both train/<class>/ and test/<class>/ side by side. The archive is incomplete: "
            "download it again."
        )
    raise DataError(
        f"the archive {archive} holds no CIFAR-10 copy: expected train/<class>/*.png|jpg and "
        f"test/<class>/*.png|jpg folders, or {TORCHVISION_FOLDER}/ (data_batch_1 ... test_batch)."
    )


def _check_classes(classes: dict[str, list], where: str) -> None:
    """Raise unless the class folders under ``where`` are exactly ``CIFAR10_CLASSES``."""
    unknown = sorted(set(classes) - set(CIFAR10_CLASSES))
    missing = [c for c in CIFAR10_CLASSES if c not in classes]
    empty = [c for c in CIFAR10_CLASSES if c in classes and not classes[c]]
    problems = []
    if missing:
        problems.append("missing class folder(s) " + ", ".join(f"{where}/{c}/" for c in missing))
    if unknown:
        problems.append("unknown class folder(s) " + ", ".join(f"{where}/{c}/" for c in unknown))
    if empty:
        problems.append(
            "class folder(s) without .png/.jpg images " + ", ".join(f"{where}/{c}/" for c in empty)
        )
    if problems:
        raise DataError(
            "; ".join(problems)
            + f". Class folders must be named exactly {', '.join(CIFAR10_CLASSES)} (lower case). "
            "Rename them, or re-extract or re-download an incomplete copy."
        )


def _decode_tree(tree: _Tree, progress: bool, where: str, source: str) -> dict:
    """Decode an image-folder tree: classes in CIFAR10_CLASSES order, files sorted by name."""
    data: dict = {}
    for split in SPLITS:
        _check_classes(tree[split], f"{where.rstrip('/')}/{split}")
        files = [
            (label, shown, src)
            for label, cls in enumerate(CIFAR10_CLASSES)
            for _, shown, src in sorted(tree[split][cls], key=lambda t: t[0])
        ]
        images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
        for i, (_, shown, src) in enumerate(
            tqdm(files, desc=f"decoding {split}", unit=" img", disable=not progress)
        ):
            images[i] = _decode_image(src, shown)
        data[f"{split}_images"] = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        data[f"{split}_labels"] = torch.tensor([label for label, _, _ in files], dtype=torch.int64)
    data["source"] = source
    return data


def _decode_image(src: _Source, shown: str) -> np.ndarray:
    """One 32x32 image as (32, 32, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as image:
            size = image.size
            if size == (32, 32):
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except Exception as e:
        raise DataError(
            f"cannot decode {shown}: {e}. The file is corrupt or truncated: re-extract the "
            "archive or re-download the data, then prepare it again."
        ) from e
    raise DataError(
        f"{shown} is {size[0]}x{size[1]} pixels; CIFAR-10 images are 32x32. This is not a "
        "CIFAR-10 copy (or it was resized): use the original images."
    )


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of numpy arrays and lists) and nothing executable."""

    _allowed = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _unpickle(raw: bytes, shown: str) -> dict:
    try:
        batch = _NumpyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    except Exception as e:
        raise DataError(
            f"cannot read {shown}: {e}. The file is corrupt: re-extract or re-download "
            "cifar-10-python.tar.gz."
        ) from e


def _decode_torchvision(files: dict[str, _Source], where: str, source: str) -> dict:
    """Decode the pickled batches of ``cifar-10-batches-py`` (bytes or paths by file name)."""
    data: dict = {}
    verified = True
    for split, names in _TORCHVISION_BATCHES.items():
        images, labels = [], []
        for name in names:
            shown = f"{where}/{name}"
            if name not in files:
                raise DataError(
                    f"missing file {shown}: a torchvision copy needs data_batch_1 ... "
                    "data_batch_5 and test_batch. Re-extract or re-download cifar-10-python.tar.gz."
                )
            src = files[name]
            raw = src if isinstance(src, bytes) else src.read_bytes()
            batch = _unpickle(raw, shown)
            verified &= hashlib.md5(raw).hexdigest() == _TORCHVISION_MD5[name]
            x = np.asarray(batch.get("data"))
            y = np.asarray(batch.get("labels", batch.get("fine_labels")))
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
                raise DataError(
                    f"{shown} is not a CIFAR-10 batch (expected 'data' uint8 (N, 3072) and N "
                    "'labels'). Re-extract or re-download cifar-10-python.tar.gz."
                )
            if len(y) and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES)):
                raise DataError(f"{shown} has labels outside 0..9: it is not CIFAR-10.")
            images.append(x.reshape(-1, 3, 32, 32))
            labels.append(y.astype(np.int64))
        data[f"{split}_images"] = torch.from_numpy(np.concatenate(images)).contiguous()
        data[f"{split}_labels"] = torch.from_numpy(np.concatenate(labels))
    if "batches.meta" in files:
        meta = files["batches.meta"]
        raw = meta if isinstance(meta, bytes) else meta.read_bytes()
        names = _unpickle(raw, f"{where}/batches.meta").get("label_names")
        if names is not None and tuple(names) != CIFAR10_CLASSES:
            raise DataError(
                f"{where}/batches.meta names the classes {list(names)}, not CIFAR-10's "
                f"{list(CIFAR10_CLASSES)}: this is another data set (CIFAR-100?)."
            )
    data["source"] = source + (
        " (md5 verified)" if verified else " (md5 differs from torchvision's)"
    )
    return data


def _download_torchvision(root: Path, progress: bool) -> dict:
    """Download with torchvision (verified md5) into ``root`` and decode the batches."""
    import torchvision.datasets

    try:
        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(root=str(root), train=True, download=True)
    except Exception as e:
        raise DataError(
            f"could not download CIFAR-10 from {CIFAR10_URL} into {root}: {e}.\n"
            "Without network access, prepare it from a local copy instead:\n"
            "  python -m helpers data --from PATH\n"
            "where PATH is cifar-10-python.tar.gz, a cifar-10-batches-py folder, or an image "
            "folder (or .tar.gz) with train/<class>/ and test/<class>/; "
            "or run with LAB_PROFILE=smoke (synthetic data)."
        ) from e
    folder = root / TORCHVISION_FOLDER
    return _decode_torchvision(
        _torchvision_files(folder), str(folder), f"torchvision download {CIFAR10_URL}"
    )


def _write_cache(data: dict, cache: Path) -> None:
    """Write atomically: a partial file never takes the cache's name."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    try:
        torch.save(data, tmp)
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- loading


def load_cifar10(root: str | Path | None = None) -> dict:
    """The prepared cache: ``{train,test}_{images,labels}`` (uint8 NCHW, int64) and ``source``.

    Raises:
        DataError: the cache is missing (the message says how to prepare it) or unreadable.
    """
    root = Path(root).expanduser() if root is not None else data_dir()
    path = root / CACHE_NAME
    if not path.is_file():
        raise DataError(f"CIFAR-10 is not prepared: {path} does not exist.\n{_GET_DATA_HELP}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"cannot read the CIFAR-10 cache {path}: {e}. Delete it and prepare the data "
            "again (`python -m helpers data` or `python -m helpers data --from PATH`)."
        ) from e
    problem = _cache_problem(data)
    if problem:
        raise DataError(
            f"{path} is not a CIFAR-10 cache made by helpers.data ({problem}). Delete it and "
            "prepare the data again (`python -m helpers data` or `python -m helpers data --from PATH`)."
        )
    return data


def _cache_problem(data: object) -> str | None:
    """What is wrong with a loaded cache, or None."""
    if not isinstance(data, dict):
        return f"holds a {type(data).__name__}, not a dict"
    for split in SPLITS:
        x, y = data.get(f"{split}_images"), data.get(f"{split}_labels")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            return f"no {split}_images/{split}_labels tensors"
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (3, 32, 32):
            return f"{split}_images is {x.dtype} {tuple(x.shape)}, not uint8 (N, 3, 32, 32)"
        if y.dtype != torch.int64 or y.shape != (len(x),):
            return f"{split}_labels is {y.dtype} {tuple(y.shape)}, not int64 ({len(x)},)"
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(CIFAR10_CLASSES)):
            return f"{split}_labels outside 0..9"
    return None


def make_synthetic(n_train: int, n_test: int, seed: int = 0) -> dict:
    """Learnable CIFAR-shaped data, the same dict as ``load_cifar10``; deterministic in ``seed``.

    Each class is a fixed random low-frequency colour pattern; an image is its class pattern,
    shifted by up to 4 pixels, maybe mirrored, with random contrast, brightness and noise.
    A small CNN learns it well above chance in a few dozen steps.
    """
    g = torch.Generator().manual_seed(seed)
    num_classes = len(CIFAR10_CLASSES)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(40, 40), mode="bilinear", align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randperm(n, generator=g) % num_classes  # balanced, shuffled
        top = torch.randint(0, 9, (n,), generator=g)
        left = torch.randint(0, 9, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        x = _crop_flip(templates, top, left, flip, (32, 32), source=labels)  # (n, 3, 32, 32)
        contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
        brightness = 0.2 * torch.rand(n, 1, 1, 1, generator=g) - 0.1
        noise = 0.12 * torch.randn(n, 3, 32, 32, generator=g)
        x = contrast * (x - 0.5) + 0.5 + brightness + noise
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels.to(torch.int64)

    train_images, train_labels = split(n_train)
    test_images, test_labels = split(n_test)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
        "source": f"synthetic(seed={seed})",
    }


# --------------------------------------------------------------------------- on-device loading


def _crop_flip(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    size: tuple[int, int],
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample crops ``images[source[b], :, top[b]:top[b]+h, left[b]:left[b]+w]``, mirrored
    left-right where ``flip[b]``, as one gather. ``source`` defaults to ``arange(B)``."""
    if source is not None:
        images = images[source]
    n, c, height, width = images.shape
    h, w = size
    steps_h = torch.arange(h, device=images.device)
    steps_w = torch.arange(w, device=images.device).expand(n, w)
    rows = top[:, None] + steps_h  # (B, h)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - steps_w, steps_w)  # (B, w)
    index = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, height * width).gather(2, index).view(n, c, h, w)


def _take_rows(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``images[index]``, copying whole images as int64 words (much faster for uint8 on CPU)."""
    flat = images.reshape(len(images), -1)
    if images.is_contiguous() and (flat.shape[1] * images.element_size()) % 8 == 0:
        words = flat.view(torch.int64).index_select(0, index)
        return words.view(images.dtype).view(len(index), *images.shape[1:])
    return images[index]


def seed_argument(text: str) -> int:
    """A command line's seed: a non-negative integer (what ``DeviceLoader`` takes), for
    argparse's ``type=``."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, not {text!r}")
    return seed


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of ``DeviceLoader``'s epoch ``epoch`` under ``seed``: NumPy's
    ``SeedSequence`` hash of the pair, so distinct pairs give unrelated streams."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


class DeviceLoader:
    """Batches of ``(inputs, targets)`` from uint8 images held on the device.

    ``inputs`` are float32 (B, 3, H, W) in [0, 1] (no mean/std normalisation), ``targets``
    int64 (B,), both on ``device``. With ``augment``, each image is randomly cropped from a
    zero-padded copy (padding 4, like ``RandomCrop(32, padding=4)``) and flipped with
    probability 0.5, for whole batches at once on the device. Epoch ``e`` (counting the
    iterations over this loader from 0, see ``epoch``) draws its order and augmentation from
    a CPU ``torch.Generator`` seeded with ``epoch_seed(seed, e)``, so runs repeat exactly on CPU
    and CUDA, and two seeds share no epoch's order (as ``seed + e`` would: seed 1's epoch 0
    would be seed 0's epoch 1).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device | None = None,
        padding: int = 4,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor (N, C, H, W)")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"{len(images)} images but labels of shape {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.device = torch.device(device) if device is not None else get_device()
        self.images = images.to(self.device)  # (N, C, H, W) uint8
        self.labels = labels.to(self.device)  # (N,) int64
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.seed = int(seed)
        self.padding = padding
        self.channels_last = channels_last
        self.num_samples = len(images)
        self.epoch = 0  # the next iteration's epoch; assign to jump to an epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __repr__(self) -> str:
        return (
            f"DeviceLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, augment={self.augment}, device={self.device})"
        )

    def _plan(self, epoch: int) -> tuple[torch.Tensor | None, ...]:
        """(order, top, left, flip) of an epoch, on the device; None where unused."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else None
        top = left = flip = None
        if self.augment:
            top = torch.randint(0, 2 * self.padding + 1, (n,), generator=g)
            left = torch.randint(0, 2 * self.padding + 1, (n,), generator=g)
            flip = torch.rand(n, generator=g) < 0.5
        return tuple(t.to(self.device) if t is not None else None for t in (order, top, left, flip))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, top, left, flip = self._plan(self.epoch)
        self.epoch += 1
        size = tuple(self.images.shape[-2:])
        p = self.padding
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.num_samples)
            if order is not None:
                x, y = _take_rows(self.images, order[lo:hi]), self.labels[order[lo:hi]]
            else:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            if self.augment:
                x = _crop_flip(F.pad(x, (p, p, p, p)), top[lo:hi], left[lo:hi], flip[lo:hi], size)
            x = x.float().div_(255)  # (B, C, H, W) in [0, 1]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def _balanced_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(len(labels))`` whose every prefix is class-balanced.

    Round-robin over the classes, each class in random order: the first ``k`` indices hold
    ``k // num_classes`` (or one more) images of every class that has enough.
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    shuffled = labels.cpu()[perm]
    one_hot = F.one_hot(shuffled, num_classes=int(shuffled.max()) + 1 if len(shuffled) else 1)
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # rank of each image within its class
    key = rank * len(labels) + torch.arange(len(labels))
    return perm[torch.argsort(key)]


def get_dataloaders(
    profile: Profile | str | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, DeviceLoader]:
    """The loaders of a profile: ``train``, ``val``, ``test``, ``scan`` and ``calib``.

    - ``train``: the training split minus the validation images; shuffled and augmented
      (seeded by ``seed``); batch ``batch_size`` (default ``profile.batch_size``).
    - ``val``: ``profile.val_size`` training images held out, class-balanced; a fixed seeded
      choice (the same for every ``seed``); no augmentation.
    - ``test``: the test split, or its class-balanced fixed subset of ``profile.test_subset``.
    - ``scan``: the first ``profile.scan_subset`` validation images (all when None).
    - ``calib``: ``profile.calib_batches`` batches of class-balanced training images (not
      validation images), no augmentation, for quantization observers.

    Evaluation loaders use ``profile.eval_batch_size``. ``cifar10`` profiles read the prepared
    cache (``load_cifar10``); ``synthetic`` ones use ``make_synthetic`` (2,048 + 512 images).
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    device = torch.device(device) if device is not None else get_device()
    batch_size = batch_size or profile.batch_size
    if profile.dataset == "synthetic":
        data = make_synthetic(SYNTHETIC_TRAIN, SYNTHETIC_TEST, seed=SYNTHETIC_SEED)
    elif profile.dataset == "cifar10":
        data = load_cifar10()
    else:
        raise ValueError(f"profile {profile.name!r} has unknown dataset {profile.dataset!r}")

    train_images, train_labels = data["train_images"], data["train_labels"]
    test_images, test_labels = data["test_images"], data["test_labels"]
    if profile.val_size >= len(train_labels):
        raise ValueError(
            f"profile {profile.name!r} holds out {profile.val_size} validation images but the "
            f"training split has only {len(train_labels)}"
        )
    order = _balanced_order(train_labels, SPLIT_SEED)
    val_index = order[: profile.val_size]
    rest = order[profile.val_size :]
    train_index = rest.sort().values
    calib_index = rest[: profile.calib_batches * batch_size]
    scan_index = val_index[: profile.scan_subset] if profile.scan_subset else val_index
    if profile.test_subset:
        test_index = _balanced_order(test_labels, SPLIT_SEED)[: profile.test_subset]
        test_images, test_labels = test_images[test_index], test_labels[test_index]

    train_images, train_labels = train_images.to(device), train_labels.to(device)

    def subset(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(device)
        return train_images[index], train_labels[index]

    eval_bs = profile.eval_batch_size
    return {
        "train": DeviceLoader(
            *subset(train_index), batch_size, shuffle=True, augment=True, seed=seed, device=device
        ),
        "val": DeviceLoader(*subset(val_index), eval_bs, device=device),
        "test": DeviceLoader(test_images, test_labels, eval_bs, device=device),
        "scan": DeviceLoader(*subset(scan_index), eval_bs, device=device),
        "calib": DeviceLoader(*subset(calib_index), batch_size, device=device),
    }


# --------------------------------------------------------------------------- torchvision path


class CachedCIFAR10(torch.utils.data.Dataset):
    """A ``torch.utils.data.Dataset`` over cached uint8 tensors, with PIL-based transforms."""

    classes = CIFAR10_CLASSES

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) uint8
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[object, int]:
        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def cifar10_torchvision_dataset(
    split: str, root: str | Path | None = None, train_transform: bool = True
) -> CachedCIFAR10:
    """The cached ``split`` ("train" or "test") as a Dataset for ``torch.utils.data.DataLoader``.

    Items are ``(float32 (3, 32, 32) in [0, 1], int label)``, the MIT lab's pipeline:
    ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()`` (only for ``split="train"``
    with ``train_transform``), then ``ToTensor()``.
    """
    from torchvision import transforms

    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = load_cifar10(root)
    steps = []
    if split == "train" and train_transform:
        steps += [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    transform = transforms.Compose([*steps, transforms.ToTensor()])
    return CachedCIFAR10(data[f"{split}_images"], data[f"{split}_labels"], transform)


# --------------------------------------------------------------------------- command line


def cli(argv: list[str] | None = None) -> int:
    """``python -m helpers data [--from PATH] [--root DIR] [--force]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers data",
        description="Prepare CIFAR-10 once as a uint8 tensor cache (data/cifar10_uint8.pt).",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="a local copy: cifar-10-python.tar.gz, a cifar-10-batches-py folder, or an image "
        "folder (or .tar.gz/.tgz of one) with train/<class>/ and test/<class>/ (PNG or JPEG); "
        "default: download with torchvision (md5-verified)",
    )
    parser.add_argument(
        "--root", metavar="DIR", type=Path, help="where the cache goes (default: LAB_DATA or data/)"
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even when the cache already exists"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        cache = prepare_cifar10(args.source, args.root, progress=not args.quiet, force=args.force)
        data = load_cifar10(cache.parent)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(f"source: {data['source']}")
    for split in SPLITS:
        counts = torch.bincount(data[f"{split}_labels"], minlength=len(CIFAR10_CLASSES)).tolist()
        per_class = ", ".join(f"{c} {n}" for c, n in zip(CIFAR10_CLASSES, counts, strict=True))
        print(f"{split}: {len(data[f'{split}_labels'])} images ({per_class})")
    size_mib = cache.stat().st_size / 2**20
    print(f"cache: {cache.resolve()} ({size_mib:.1f} MiB), ready in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
