"""Tests for helpers.data: preparing, caching and loading CIFAR-10-shaped data.

Every data set here is tiny and written by the tests; nothing needs the real CIFAR-10.
"""

from __future__ import annotations

import dataclasses
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from helpers import data as hd
from helpers.data import (
    CACHE_NAME,
    CIFAR10_CLASSES,
    DataError,
    DeviceLoader,
    cifar10_torchvision_dataset,
    get_dataloaders,
    load_cifar10,
    make_synthetic,
    prepare_cifar10,
)

TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 2


def random_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images (N, 32, 32, 3) uint8 sorted by class, and their labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(10 * per_class, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(10), per_class)
    return images, labels


@pytest.fixture(scope="module")
def tiny() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny CIFAR-10: 3 train and 2 test images per class, in class order."""
    return {"train": random_split(TRAIN_PER_CLASS, 1), "test": random_split(TEST_PER_CLASS, 2)}


def write_image_tree(root: Path, splits: dict, suffix: str = ".png", **save_kwargs) -> Path:
    """Write ``root/{train,test}/<class>/NNNN<suffix>``; returns ``root``."""
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}{suffix}", **save_kwargs)
    return root


def write_torchvision_tree(parent: Path, splits: dict) -> Path:
    """Write ``parent/cifar-10-batches-py`` as torchvision's pickles (protocol 2, like the
    original Python 2 files); returns the batches folder."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3072): R, G, B planes
        batch = {"batch_label": name, "labels": labels.tolist(), "data": rows}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)

    images, labels = splits["train"]
    for k, part in enumerate(np.array_split(np.arange(len(images)), 5), start=1):
        dump(f"data_batch_{k}", images[part], labels[part])
    dump("test_batch", *splits["test"])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, f, protocol=2)
    return folder


def expected_tensors(splits: dict) -> dict[str, torch.Tensor]:
    out = {}
    for split, (images, labels) in splits.items():
        out[f"{split}_images"] = torch.from_numpy(images).permute(0, 3, 1, 2)
        out[f"{split}_labels"] = torch.from_numpy(labels).long()
    return out


def assert_same_data(a: dict, b: dict) -> None:
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- preparing and the cache


def test_png_tree_and_torchvision_format_give_identical_tensors(tmp_path, tiny):
    """Do an image-folder copy and a torchvision copy of the same images give the same cache?"""
    tree = write_image_tree(tmp_path / "png", tiny)
    batches = write_torchvision_tree(tmp_path / "tv", tiny)

    from_png = load_cifar10(prepare_cifar10(tree, tmp_path / "a", progress=False).parent)
    from_tv = load_cifar10(prepare_cifar10(batches, tmp_path / "b", progress=False).parent)
    from_parent = load_cifar10(
        prepare_cifar10(batches.parent, tmp_path / "c", progress=False).parent
    )

    assert_same_data(from_png, expected_tensors(tiny))
    assert_same_data(from_tv, from_png)
    assert_same_data(from_parent, from_png)
    assert from_png["train_images"].shape == (10 * TRAIN_PER_CLASS, 3, 32, 32)
    assert "image folder" in from_png["source"] and "torchvision folder" in from_tv["source"]
    assert "md5 differs" in from_tv["source"]  # not the real CIFAR-10 files


def test_image_folder_order_is_class_then_sorted_file_name(tmp_path):
    """Are images ordered by CIFAR10_CLASSES, then by file name, whatever the write order?"""
    rng = np.random.default_rng(0)
    names = ["b.png", "a.png", "c10.png", "c2.png"]
    for split in ("train", "test"):
        for cls in reversed(CIFAR10_CLASSES):
            (tmp_path / "tree" / split / cls).mkdir(parents=True)
            for name in names:
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / "tree" / split / cls / name)
    data = load_cifar10(prepare_cifar10(tmp_path / "tree", tmp_path, progress=False).parent)
    expected = []
    for cls in CIFAR10_CLASSES:
        for name in sorted(names):
            path = tmp_path / "tree" / "train" / cls / name
            expected.append(torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1))
    assert torch.equal(data["train_images"], torch.stack(expected))
    assert data["train_labels"].tolist() == [c for c in range(10) for _ in names]


def test_jpeg_folder_and_other_modes_decode_like_pil(tmp_path, tiny):
    """Does a JPEG tree (and a grayscale/RGBA/palette PNG) decode exactly as PIL's RGB?"""
    tree = write_image_tree(tmp_path / "jpg", tiny, ".jpg", quality=90)
    odd = tree / "train" / "cat" / "0100.png"
    Image.fromarray(tiny["train"][0][0]).convert("L").save(odd)
    Image.fromarray(tiny["train"][0][1]).convert("RGBA").save(tree / "train" / "cat" / "0101.PNG")
    Image.fromarray(tiny["train"][0][2]).convert("P").save(tree / "train" / "cat" / "0102.png")

    data = load_cifar10(prepare_cifar10(tree, tmp_path / "out", progress=False).parent)

    files = [p for c in CIFAR10_CLASSES for p in sorted((tree / "train" / c).iterdir())]
    oracle = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    assert torch.equal(data["train_images"], torch.from_numpy(oracle).permute(0, 3, 1, 2))
    assert len(data["train_labels"]) == 10 * TRAIN_PER_CLASS + 3


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz"])
def test_tar_archive_loads_like_the_folder(tmp_path, tiny, suffix):
    """Does an archive of an image tree (under a top folder) load like the unpacked tree?"""
    tree = write_image_tree(tmp_path / "copy" / "cifar10-png", tiny)
    archive = tmp_path / f"cifar{suffix}"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="cifar10-png")
        hidden = tmp_path / "._0000.png"
        hidden.write_bytes(b"macOS resource fork, not an image")
        tar.add(hidden, arcname="cifar10-png/train/cat/._0000.png")

    from_archive = load_cifar10(prepare_cifar10(archive, tmp_path / "a", progress=False).parent)
    from_folder = load_cifar10(prepare_cifar10(tree, tmp_path / "b", progress=False).parent)
    from_parent = load_cifar10(prepare_cifar10(tree.parent, tmp_path / "c", progress=False).parent)

    assert_same_data(from_archive, from_folder)
    assert_same_data(from_parent, from_folder)
    assert from_archive["source"].endswith(f"cifar{suffix}:cifar10-png")


def test_tar_archive_of_torchvision_format_loads(tmp_path, tiny):
    """Does an archive laid out like cifar-10-python.tar.gz load like the folder?"""
    batches = write_torchvision_tree(tmp_path / "tv", tiny)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    data = load_cifar10(prepare_cifar10(archive, tmp_path / "out", progress=False).parent)
    assert_same_data(data, expected_tensors(tiny))


def test_cache_is_written_atomically_and_reused(tmp_path, tiny, monkeypatch):
    """Is the cache the only file written, and does source=None reuse it without a download?"""
    tree = write_image_tree(tmp_path / "tree", tiny)
    cache = prepare_cifar10(tree, tmp_path / "root", progress=False)
    assert cache == tmp_path / "root" / CACHE_NAME
    assert [p.name for p in cache.parent.iterdir()] == [CACHE_NAME]

    def no_download(*args, **kwargs):
        raise AssertionError("must not download when the cache exists")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", no_download)
    assert prepare_cifar10(None, tmp_path / "root", progress=False) == cache
    monkeypatch.setenv("LAB_DATA", str(tmp_path / "root"))
    assert_same_data(load_cifar10(), expected_tensors(tiny))


# ---------------------------------------------------------------- errors


def test_missing_source_names_the_path_and_the_fix(tmp_path):
    """Does a missing --from path say which path and what to pass instead?"""
    with pytest.raises(DataError, match="nowhere") as info:
        prepare_cifar10(tmp_path / "nowhere", tmp_path, progress=False)
    assert "--from" in str(info.value)


def test_folder_without_a_copy_explains_the_layout(tmp_path):
    """Does a folder holding something else name the expected layouts?"""
    (tmp_path / "src" / "pictures").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/ and test/") as info:
        prepare_cifar10(tmp_path / "src", tmp_path, progress=False)
    assert "cifar-10-batches-py" in str(info.value)


def test_missing_split_folder_is_named(tmp_path, tiny):
    """Does a tree without test/ name the missing folder?"""
    tree = write_image_tree(tmp_path / "tree", {"train": tiny["train"]})
    with pytest.raises(DataError, match="missing folder .*test"):
        prepare_cifar10(tree, tmp_path, progress=False)


def test_corrupt_image_names_the_file_and_suggests_re_extracting(tmp_path, tiny):
    """Does a corrupt image name the file and say to re-extract or re-download?"""
    tree = write_image_tree(tmp_path / "tree", tiny)
    bad = sorted((tree / "test" / "dog").iterdir())[1]
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    with pytest.raises(DataError) as info:
        prepare_cifar10(tree, tmp_path / "out", progress=False)
    message = str(info.value)
    assert str(bad) in message and "re-extract" in message and "re-download" in message
    assert not (tmp_path / "out" / CACHE_NAME).exists()


def test_corrupt_image_in_archive_names_the_member(tmp_path, tiny):
    """Does a corrupt image inside an archive name the archive and the member?"""
    tree = write_image_tree(tmp_path / "tree", tiny)
    (tree / "train" / "frog" / "0002.png").write_bytes(b"not a png at all")
    archive = tmp_path / "copy.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="copy")
    with pytest.raises(DataError, match=r"copy\.tar\.gz:copy/train/frog/0002\.png"):
        prepare_cifar10(archive, tmp_path / "out", progress=False)


def test_archive_without_test_split_names_what_it_has(tmp_path, tiny):
    """Does an archive holding only train/ say what it found and that it is incomplete?"""
    tree = write_image_tree(tmp_path / "tree", {"train": tiny["train"]})
    archive = tmp_path / "half.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="half")
    with pytest.raises(DataError, match=r"half/train/ only") as info:
        prepare_cifar10(archive, tmp_path / "out", progress=False)
    assert "incomplete" in str(info.value)


def test_wrong_image_size_names_the_file(tmp_path, tiny):
    """Does a 31x32 image name the file and the expected size?"""
    tree = write_image_tree(tmp_path / "tree", tiny)
    bad = tree / "train" / "ship" / "0000.png"
    Image.new("RGB", (31, 32)).save(bad)
    with pytest.raises(DataError, match="31x32") as info:
        prepare_cifar10(tree, tmp_path / "out", progress=False)
    assert str(bad) in str(info.value) and "32x32" in str(info.value)


def test_missing_and_unknown_class_folders_are_named(tmp_path, tiny):
    """Does a renamed class folder produce an error naming both the missing and unknown one?"""
    tree = write_image_tree(tmp_path / "tree", tiny)
    (tree / "test" / "truck").rename(tree / "test" / "Truck")
    with pytest.raises(DataError) as info:
        prepare_cifar10(tree, tmp_path / "out", progress=False)
    message = str(info.value)
    assert "missing class folder" in message and str(tree / "test" / "truck") in message
    assert "unknown class folder" in message and "Truck" in message


def test_corrupt_archive_says_to_download_again(tmp_path):
    """Does a truncated .tar.gz name the archive and say to download it again?"""
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="broken.tar.gz") as info:
        prepare_cifar10(archive, tmp_path, progress=False)
    assert "download it again" in str(info.value)


def test_corrupt_torchvision_batch_names_the_file(tmp_path, tiny):
    """Does a damaged pickle name the batch file (and never run code from it)?"""
    batches = write_torchvision_tree(tmp_path / "tv", tiny)
    (batches / "data_batch_3").write_bytes(pickle.dumps(print))  # a global outside the allowlist
    with pytest.raises(DataError, match="data_batch_3") as info:
        prepare_cifar10(batches, tmp_path / "out", progress=False)
    assert "re-download" in str(info.value)


def test_missing_cache_says_how_to_get_the_data(tmp_path):
    """Does a missing cache name the file and every way to get the data?"""
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / CACHE_NAME) in message
    for fix in ("python -m helpers data", "python -m helpers data --from PATH", "make data"):
        assert fix in message
    assert "LAB_PROFILE=smoke" in message


@pytest.mark.parametrize("content", ["garbage", "wrong-dict", "wrong-dtype"])
def test_corrupt_or_foreign_cache_names_the_file(tmp_path, content):
    """Does an unreadable or foreign cache name the file and say to prepare again?"""
    path = tmp_path / CACHE_NAME
    if content == "garbage":
        path.write_bytes(b"not a torch file")
    elif content == "wrong-dict":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        data = make_synthetic(20, 10)
        data["train_images"] = data["train_images"].float()
        torch.save(data, path)
    with pytest.raises(DataError, match=CACHE_NAME) as info:
        load_cifar10(tmp_path)
    assert "python -m helpers data" in str(info.value)


def test_failed_download_points_to_from_path(tmp_path, monkeypatch):
    """Without network, does prepare_cifar10() say to use --from PATH?"""

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    with pytest.raises(DataError, match="could not download") as info:
        prepare_cifar10(None, tmp_path, progress=False)
    assert "python -m helpers data --from PATH" in str(info.value)


def test_cli_prints_counts_source_and_cache(tmp_path, tiny, capsys):
    """Does the CLI print per-split counts, the source and the cache, and exit 0 / 1?"""
    tree = write_image_tree(tmp_path / "tree", tiny)
    assert hd.cli(["--from", str(tree), "--root", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"train: {10 * TRAIN_PER_CLASS} images" in out
    assert f"test: {10 * TEST_PER_CLASS} images" in out
    assert "image folder" in out and CACHE_NAME in out and "MiB" in out

    assert hd.cli(["--from", str(tmp_path / "nowhere"), "--root", str(tmp_path)]) == 1
    assert "nowhere" in capsys.readouterr().err


# ---------------------------------------------------------------- DeviceLoader


def coloured_by_label(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images filled with 20 * label + 10 (never 0), so labels can be read off the pixels."""
    labels = torch.arange(n) % 10
    images = (20 * labels + 10).to(torch.uint8)[:, None, None, None].expand(n, 3, 32, 32)
    return images.contiguous(), labels


def batches(loader: DeviceLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_device_loader_yields_float_in_unit_range_and_counts_batches():
    """Are batches float32 in [0, 1] (x / 255, no normalisation) with len() = #batches?"""
    data = make_synthetic(100, 10)
    loader = DeviceLoader(data["train_images"], data["train_labels"], 32, device="cpu")
    assert len(loader) == 4 and loader.num_samples == 100
    got = batches(loader)
    assert [len(y) for _, y in got] == [32, 32, 32, 4]
    x = torch.cat([x for x, _ in got])
    assert x.dtype == torch.float32 and x.shape == (100, 3, 32, 32)
    assert torch.equal(x, data["train_images"].float() / 255)
    assert torch.equal(torch.cat([y for _, y in got]), data["train_labels"])
    assert len(DeviceLoader(data["train_images"], data["train_labels"], 32, drop_last=True)) == 3


def test_augmentation_is_deterministic_under_seed_and_varies_with_seed_and_epoch():
    """Same seed: same batches; other seed or next epoch: different; jumping to an epoch by
    assigning ``epoch`` gives that epoch's batches."""
    data = make_synthetic(64, 10)

    def make(seed: int) -> DeviceLoader:
        return DeviceLoader(
            data["train_images"], data["train_labels"], 16, True, True, seed=seed, device="cpu"
        )

    a, b, c = make(5), make(5), make(6)
    a0, a1 = batches(a), batches(a)
    b0, c0 = batches(b), batches(c)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a0, b0, strict=True))
    assert not torch.equal(a0[0][0], c0[0][0])
    assert not torch.equal(a0[0][0], a1[0][0])
    jumped = make(5)
    jumped.epoch = 1
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a1, batches(jumped), strict=True))


def test_no_two_seeds_share_an_epochs_order():
    """Seeds 0-4 over epochs 0-4: are all 25 shuffles different? (With ``seed + epoch`` as the
    generator seed, seed s's epoch e + 1 was seed s + 1's epoch e: only 9 distinct orders here.)"""
    n = 64
    labels = torch.arange(n) % 10
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    orders = set()
    for seed in range(5):
        loader = DeviceLoader(images, labels, n, shuffle=True, seed=seed, device="cpu")
        for _ in range(5):
            ((x, _),) = list(loader)
            orders.add(tuple(int(v) for v in (x[:, 0, 0, 0] * 255).round()))
    assert len(orders) == 25


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_loader_refuses_a_seed_that_is_not_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        DeviceLoader(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4), 2, seed=seed)


def test_augmentation_keeps_labels_aligned():
    """After crop and flip, does every image still carry its own label's colour?"""
    images, labels = coloured_by_label(200)
    loader = DeviceLoader(images, labels, 64, shuffle=True, augment=True, seed=3, device="cpu")
    for x, y in loader:
        colour = (20 * y + 10).float()[:, None, None, None] / 255
        inner = x[:, :, 4:28, 4:28]  # always inside the image whatever the crop offset
        assert torch.equal(inner, colour.expand_as(inner))
        assert torch.all((x == 0) | (x == colour))  # elsewhere: the image or zero padding
    assert sorted(torch.cat([y for _, y in batches(loader)]).tolist()) == sorted(labels.tolist())


def test_crop_and_flip_match_torchvision_per_image():
    """Does each augmented image equal torchvision's pad + crop + hflip with the same offsets?"""
    data = make_synthetic(50, 10, seed=1)
    loader = DeviceLoader(
        data["train_images"], data["train_labels"], 16, True, True, seed=7, device="cpu"
    )
    order, top, left, flip = loader._plan(0)
    got = torch.cat([x for x, _ in loader])
    assert flip.any() and not flip.all() and top.unique().numel() > 3
    for i in range(len(got)):
        image = data["train_images"][order[i]]
        expected = TF.crop(TF.pad(image, [4]), int(top[i]), int(left[i]), 32, 32)
        if flip[i]:
            expected = TF.hflip(expected)
        assert torch.equal(got[i], expected.float() / 255), i


def test_channels_last_option():
    """Does channels_last=True yield channels-last batches with the same values?"""
    data = make_synthetic(20, 10)
    plain = DeviceLoader(data["train_images"], data["train_labels"], 8, device="cpu")
    cl = DeviceLoader(
        data["train_images"], data["train_labels"], 8, device="cpu", channels_last=True
    )
    for (x, _), (z, _) in zip(plain, cl, strict=True):
        assert z.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, z)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_is_the_same_on_cuda_and_cpu():
    """Do CPU and CUDA loaders with the same seed yield identical batches?"""
    data = make_synthetic(300, 10)
    args = (data["train_images"], data["train_labels"], 64, True, True)
    cpu = batches(DeviceLoader(*args, seed=2, device="cpu"))
    gpu = batches(DeviceLoader(*args, seed=2, device="cuda"))
    for (x, y), (u, v) in zip(cpu, gpu, strict=True):
        assert u.is_cuda and torch.equal(x, u.cpu()) and torch.equal(y, v.cpu())


# ---------------------------------------------------------------- synthetic data and profiles


def test_make_synthetic_is_deterministic_balanced_and_cifar_shaped():
    """Same seed: same data; other seed: different; uint8 NCHW with balanced labels."""
    a, b, c = make_synthetic(200, 100, 0), make_synthetic(200, 100, 0), make_synthetic(200, 100, 1)
    assert_same_data(a, b)
    assert not torch.equal(a["train_images"], c["train_images"])
    assert a["train_images"].dtype == torch.uint8 and a["train_images"].shape == (200, 3, 32, 32)
    assert a["test_labels"].dtype == torch.int64
    assert torch.bincount(a["train_labels"]).tolist() == [20] * 10
    assert a["train_images"].float().std() > 20  # not flat images


def test_synthetic_data_is_learnable_by_a_small_cnn():
    """Does a tiny CNN trained for a few seconds score well above chance (10%)?"""
    torch.manual_seed(0)
    data = make_synthetic(1024, 256, seed=0)
    nn = torch.nn
    model = nn.Sequential(
        nn.AvgPool2d(2),  # (N, 3, 16, 16): keeps the test fast
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = DeviceLoader(data["train_images"], data["train_labels"], 64, True, True, device="cpu")
    for _ in range(3):
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test = DeviceLoader(data["test_images"], data["test_labels"], 256, device="cpu")
    model.eval()
    with torch.inference_mode():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    assert correct / 256 > 0.5  # chance is 0.1


def test_get_dataloaders_under_smoke():
    """Does the smoke profile give the five loaders with the profile's sizes and splits?"""
    profile = hd.get_profile("smoke")
    loaders = get_dataloaders("smoke", device="cpu", seed=0)
    assert set(loaders) == {"train", "val", "test", "scan", "calib"}
    n_train, n_test = hd.SYNTHETIC_TRAIN, hd.SYNTHETIC_TEST
    assert loaders["val"].num_samples == profile.val_size
    assert loaders["train"].num_samples == n_train - profile.val_size
    assert loaders["test"].num_samples == (profile.test_subset or n_test)
    assert loaders["scan"].num_samples == (profile.scan_subset or profile.val_size)
    assert torch.equal(loaders["scan"].images, loaders["val"].images[: loaders["scan"].num_samples])
    assert len(loaders["calib"]) == profile.calib_batches
    assert loaders["train"].augment and loaders["train"].shuffle
    assert not any(loaders[k].augment or loaders[k].shuffle for k in ("val", "test", "calib"))
    val_counts = torch.bincount(loaders["val"].labels, minlength=10)
    assert val_counts.max() - val_counts.min() <= 1  # class-balanced
    x, y = next(iter(loaders["train"]))
    assert x.shape == (profile.batch_size, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.dtype == torch.int64

    # train and val are disjoint and together the whole training split
    full = make_synthetic(n_train, n_test, seed=hd.SYNTHETIC_SEED)["train_images"]
    held = torch.cat([loaders["train"].images, loaders["val"].images])
    assert sorted(map(hash_image, held)) == sorted(map(hash_image, full))
    # the split does not depend on the training seed
    other = get_dataloaders("smoke", device="cpu", seed=1)
    assert torch.equal(other["val"].images, loaders["val"].images)
    assert get_dataloaders("smoke", device="cpu", batch_size=32)["train"].batch_size == 32


def hash_image(image: torch.Tensor) -> bytes:
    return image.numpy().tobytes()


def test_test_subset_is_class_balanced_and_fixed(tmp_path, monkeypatch):
    """With test_subset, is the test loader a fixed, class-balanced subset of the test split?"""
    data = make_synthetic(300, 200, seed=3)
    monkeypatch.setenv("LAB_DATA", str(tmp_path))
    torch.save(data, tmp_path / CACHE_NAME)
    profile = hd.get_profile("quick")
    profile = dataclasses.replace(profile, val_size=50, test_subset=40)
    first = get_dataloaders(profile, device="cpu")
    second = get_dataloaders(profile, device="cpu", seed=9)
    assert first["test"].num_samples == 40
    assert torch.bincount(first["test"].labels, minlength=10).tolist() == [4] * 10
    assert torch.equal(first["test"].images, second["test"].images)
    assert first["scan"].num_samples == min(profile.scan_subset, 50)


def test_torchvision_dataset_matches_device_loader(tmp_path):
    """Does a DataLoader over cifar10_torchvision_dataset yield the same shapes, dtypes,
    range, and (without augmentation) the very same values as DeviceLoader?"""
    data = make_synthetic(40, 30, seed=2)
    torch.save(data, tmp_path / CACHE_NAME)
    test = cifar10_torchvision_dataset("test", root=tmp_path)
    assert len(test) == 30
    plain = torch.utils.data.DataLoader(test, batch_size=8)
    device = DeviceLoader(data["test_images"], data["test_labels"], 8, device="cpu")
    for (x, y), (u, v) in zip(plain, device, strict=True):
        assert x.dtype == u.dtype == torch.float32 and y.dtype == v.dtype == torch.int64
        assert torch.equal(x, u) and torch.equal(y, v)

    train = torch.utils.data.DataLoader(cifar10_torchvision_dataset("train", root=tmp_path), 16)
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="split"):
        cifar10_torchvision_dataset("val", root=tmp_path)


@pytest.mark.parametrize("seed", ["-1", "1.5", "x"])
def test_command_lines_refuse_a_seed_the_loader_would_refuse(seed, capsys):
    """``train-dense --seed -1`` (and the benchmarks, which share the argument type): a usage
    error naming the value (exit 2), not a ValueError from deep in the loader."""
    from helpers.train import train_dense_cli

    with pytest.raises(SystemExit) as stopped:
        train_dense_cli(["--profile", "smoke", "--seed", seed])
    assert stopped.value.code == 2
    assert f"a seed is a non-negative integer, not {seed!r}" in capsys.readouterr().err
