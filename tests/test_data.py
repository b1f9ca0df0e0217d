"""Data loading on real (tiny) files written here, and the device-side batch helpers."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import Dataset, augment_batch, iterate_batches, load_dataset, resize_images
from nas.errors import NasError


def unstandardize(x: torch.Tensor, ds: Dataset) -> torch.Tensor:
    mean = torch.tensor(ds.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32).view(1, -1, 1, 1)
    return x * std + mean


def assert_standardized(ds: Dataset) -> None:
    per_channel = ds.x_train.transpose(0, 1).reshape(ds.in_channels, -1).double()
    assert torch.allclose(per_channel.mean(1), torch.zeros(ds.in_channels, dtype=torch.float64), atol=1e-5)
    ones = torch.ones(ds.in_channels, dtype=torch.float64)
    assert torch.allclose(per_channel.std(1, unbiased=False), ones, atol=1e-4)


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [i % 10 for i in range(per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


def write_cifar100(root: Path) -> None:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 30), ("test", 10)):
        batch = {
            b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            b"coarse_labels": [0] * n,
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        (root / name).write_bytes(pickle.dumps(batch))


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_image_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], gray: bool = False) -> None:
    """Class k's images are filled with grey level 40 * (k + 1), so labels can be read off pixels."""
    for k, (name, shapes) in enumerate(sorted(sizes.items())):
        for i, (h, w) in enumerate(shapes):
            shape = (h, w) if gray else (h, w, 3)
            write_png(root / name / f"{i}.png", np.full(shape, 40 * (k + 1), dtype=np.uint8))


# --- digits ---------------------------------------------------------------------------------------


def test_digits_loads_standardized_stratified_split():
    ds = load_dataset()
    assert ds.name == "digits"
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_val.shape[1:] == (1, 8, 8)
    assert len(ds.y_train) + len(ds.y_val) == 1797
    assert len(ds.y_train) == ds.x_train.shape[0] and len(ds.y_val) == ds.x_val.shape[0]
    assert 0.19 < len(ds.y_val) / 1797 < 0.21
    assert (ds.num_classes, ds.in_channels, ds.resolution) == (10, 1, 8)
    assert_standardized(ds)
    assert 0 < ds.mean[0] < 1 and 0 < ds.std[0] < 1
    assert torch.equal(torch.unique(ds.y_train), torch.arange(10))
    assert torch.equal(torch.unique(ds.y_val), torch.arange(10))
    assert ds.describe() == f"digits: {len(ds.y_train)} train / {len(ds.y_val)} val, 10 classes, 1x8x8"
    raw = unstandardize(ds.x_train, ds)
    assert raw.min().item() == pytest.approx(0, abs=1e-5) and raw.max().item() == pytest.approx(1, abs=1e-5)


def test_val_fraction_sets_each_class_share():
    ds = load_dataset(val_fraction=0.5)
    train_counts, val_counts = torch.bincount(ds.y_train), torch.bincount(ds.y_val)
    assert ((train_counts - val_counts).abs() <= 1).all()


def test_same_seed_same_tensors_other_seed_other_split():
    a, b = load_dataset(seed=3, per_class=7), load_dataset(seed=3, per_class=7)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.mean == b.mean and a.std == b.std
    c = load_dataset(seed=4, per_class=7)
    assert not torch.equal(a.x_val, c.x_val)
    assert not torch.equal(a.x_train, c.x_train)


def test_per_class_keeps_that_many_and_leaves_validation_whole():
    full = load_dataset()
    ds = load_dataset(per_class=5)
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 5))
    assert torch.equal(ds.y_val, full.y_val)
    assert torch.allclose(unstandardize(ds.x_val, ds), unstandardize(full.x_val, full), atol=1e-5)
    assert_standardized(ds)


def test_per_class_larger_than_a_class_keeps_the_whole_class():
    full, ds = load_dataset(), load_dataset(per_class=10_000)
    assert torch.equal(ds.y_train, full.y_train)


def test_subsets_of_one_seed_are_nested():
    small, large = load_dataset(per_class=3), load_dataset(per_class=6)
    small_rows = {tuple(r.tolist()) for r in unstandardize(small.x_train, small).flatten(1).mul(16).round()}
    large_rows = {tuple(r.tolist()) for r in unstandardize(large.x_train, large).flatten(1).mul(16).round()}
    assert small_rows <= large_rows and len(large_rows) > len(small_rows)


def test_fraction_keeps_that_share_of_each_class():
    full = load_dataset()
    ds = load_dataset(fraction=0.25)
    expected = [max(1, round(0.25 * int(n))) for n in torch.bincount(full.y_train)]
    assert torch.bincount(ds.y_train).tolist() == expected
    assert torch.equal(ds.y_val, full.y_val)


def test_image_size_resizes_both_splits():
    ds = load_dataset(image_size=12)
    assert ds.x_train.shape[1:] == (1, 12, 12) and ds.x_val.shape[1:] == (1, 12, 12)
    assert ds.resolution == 12
    assert_standardized(ds)


TENSOR_FIELDS = ("x_train", "y_train", "x_val", "y_val")


def test_to_moves_every_tensor_and_keeps_the_rest():
    ds = load_dataset(per_class=2)
    # PyTorch's meta device exists on every machine, so this is a real move even without a GPU.
    moved = ds.to("meta")
    assert isinstance(moved, Dataset) and moved is not ds
    for field in TENSOR_FIELDS:
        before, after = getattr(ds, field), getattr(moved, field)
        assert after.device.type == "meta", f"{field} stayed on {after.device}"
        assert (after.shape, after.dtype) == (before.shape, before.dtype), field
        assert before.device.type == "cpu", f"the original's {field} moved too"
    assert (moved.name, moved.num_classes, moved.mean, moved.std) == (ds.name, ds.num_classes, ds.mean, ds.std)
    assert moved.describe() == ds.describe()
    # Every trial calls data.to(device): data already there must not be copied again.
    same = ds.to("cpu")
    for field in TENSOR_FIELDS:
        assert getattr(same, field).data_ptr() == getattr(ds, field).data_ptr(), f"{field} was copied"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_to_cuda_and_back_keeps_every_value():
    ds = load_dataset(per_class=2)
    on_gpu = ds.to("cuda")
    assert all(getattr(on_gpu, f).is_cuda for f in TENSOR_FIELDS)
    back = on_gpu.to("cpu")
    for field in TENSOR_FIELDS:
        assert torch.equal(getattr(back, field), getattr(ds, field)), field


# --- CIFAR ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_batches_load_with_test_batch_as_validation(tmp_path, nested):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(tmp_path if nested else tmp_path / "cifar-10-batches-py")
    assert ds.name.startswith("cifar-10:")
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_val.shape == (20, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_val.dtype == torch.int64
    assert ds.num_classes == 10 and ds.in_channels == 3 and ds.resolution == 32
    assert ds.y_val.tolist() == batches["test_batch"][b"labels"]
    assert ds.y_train[:20].tolist() == batches["data_batch_1"][b"labels"]
    first = torch.from_numpy(batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(unstandardize(ds.x_train[:1], ds)[0], first, atol=1e-5)
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 1024)
    assert ds.mean == pytest.approx(tuple(train.mean(axis=(0, 2)) / 255), abs=1e-6)
    assert_standardized(ds)


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset(tmp_path)
    assert ds.name.startswith("cifar-100:")
    assert ds.num_classes == 100
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_val.shape == (10, 3, 32, 32)
    assert int(ds.y_train.max()) < 100


def test_cifar10_per_class(tmp_path):
    write_cifar10(tmp_path)
    ds = load_dataset(tmp_path, per_class=3)
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 3))
    assert len(ds.y_val) == 20


# --- image folders --------------------------------------------------------------------------------


def test_image_folder_rgb_with_smallest_side_and_sorted_classes(tmp_path):
    write_image_folder(tmp_path, {"cat": [(12, 14)] * 5, "ant": [(10, 16)] * 5, "bee": [(20, 20)] * 5})
    ds = load_dataset(tmp_path)
    assert ds.name == f"images:{tmp_path}"
    assert (ds.num_classes, ds.in_channels, ds.resolution) == (3, 3, 10)
    assert ds.x_train.dtype == torch.float32
    assert len(ds.y_train) + len(ds.y_val) == 15
    assert torch.bincount(ds.y_val).tolist() == [1, 1, 1]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        level = unstandardize(x, ds).mean(dim=(1, 2, 3)) * 255
        assert torch.allclose(level, 40 * (y.float() + 1), atol=0.01)
    assert_standardized(ds)


def test_image_folder_all_gray_loads_one_channel_and_mixed_loads_rgb(tmp_path):
    write_image_folder(tmp_path / "gray", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3}, gray=True)
    assert load_dataset(tmp_path / "gray").in_channels == 1
    write_image_folder(tmp_path / "mixed", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3}, gray=True)
    write_png(tmp_path / "mixed" / "b" / "rgb.png", np.zeros((8, 8, 3), dtype=np.uint8))
    assert load_dataset(tmp_path / "mixed").in_channels == 3


def test_image_folder_image_size_and_cap(tmp_path):
    write_image_folder(tmp_path / "small", {"a": [(9, 11)] * 3, "b": [(30, 13)] * 3})
    assert load_dataset(tmp_path / "small", image_size=6).resolution == 6
    write_image_folder(tmp_path / "big", {"a": [(300, 260)] * 2, "b": [(240, 400)] * 2})
    assert load_dataset(tmp_path / "big").resolution == 224


def test_image_folder_centre_crops_non_square_images(tmp_path):
    image = np.zeros((8, 16), dtype=np.uint8)
    image[:, 4:12] = 255
    for cls in ("a", "b"):
        for i in range(2):
            write_png(tmp_path / cls / f"{i}.png", image)
    ds = load_dataset(tmp_path)
    assert ds.resolution == 8
    assert torch.allclose(unstandardize(ds.x_train, ds), torch.ones_like(ds.x_train), atol=1e-5)


def test_image_folder_with_train_and_val_folders_uses_them(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [(8, 8)] * 4, "b": [(8, 8)] * 2, "c": [(8, 8)] * 3})
    write_image_folder(tmp_path / "val", {"a": [(8, 8)], "b": [(8, 8)] * 2})
    ds = load_dataset(tmp_path)
    assert ds.num_classes == 3
    assert torch.bincount(ds.y_train).tolist() == [4, 2, 3]
    assert ds.y_val.tolist() == [0, 1, 1]


def test_image_folder_with_test_folder(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [(8, 8)] * 2, "b": [(8, 8)] * 2})
    write_image_folder(tmp_path / "test", {"a": [(8, 8)], "b": [(8, 8)]})
    ds = load_dataset(tmp_path)
    assert (len(ds.y_train), len(ds.y_val)) == (4, 2)


# --- npz ------------------------------------------------------------------------------------------


def npz_images(n: int = 12, size: int = 6, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "nhw1"])
def test_npz_layouts(tmp_path, layout):
    nhwc = npz_images(channels=1 if layout in ("nhw", "nhw1") else 3)
    x = {"nhw": nhwc[..., 0], "nhwc": nhwc, "nchw": nhwc.transpose(0, 3, 1, 2), "nhw1": nhwc}[layout]
    y = np.arange(12) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, x_val=x[:3], y_val=y[:3])
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.name == f"npz:{tmp_path / 'd.npz'}"
    assert ds.x_train.shape == (12, nhwc.shape[3], 6, 6) and ds.x_val.shape == (3, nhwc.shape[3], 6, 6)
    assert ds.num_classes == 3 and ds.y_train.tolist() == y.tolist()
    expected = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(unstandardize(ds.x_train, ds), expected, atol=1e-5)


def test_npz_float_taken_as_unit_range_and_split_when_no_val(tmp_path):
    x = np.random.default_rng(0).random((20, 1, 5, 5)).astype(np.float64)
    y = np.arange(20) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y.astype(np.float32))
    ds = load_dataset(tmp_path / "d.npz", val_fraction=0.2)
    assert (len(ds.y_train), len(ds.y_val)) == (16, 4)
    assert torch.bincount(ds.y_val).tolist() == [2, 2]
    assert ds.mean[0] == pytest.approx(float(x.mean()), abs=0.1)
    assert ds.y_train.dtype == torch.int64


def test_npz_non_square_images_are_centre_cropped(tmp_path):
    x = np.zeros((4, 4, 8), dtype=np.uint8)
    x[:, :, 2:6] = 255
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]), x_val=x[:2], y_val=np.array([0, 1]))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.resolution == 4
    assert torch.allclose(unstandardize(ds.x_train, ds), torch.ones(4, 1, 4, 4), atol=1e-5)


# --- resize, augment, batches ---------------------------------------------------------------------


def test_resize_images_shapes_and_values():
    x = torch.rand(2, 3, 8, 8)
    assert resize_images(x, 8) is x
    assert resize_images(x, 4).shape == (2, 3, 4, 4)
    assert resize_images(x, 13).shape == (2, 3, 13, 13)
    assert resize_images(torch.rand(2, 1, 6, 9), 5).shape == (2, 1, 5, 5)
    constant = torch.full((1, 1, 8, 8), 0.25)
    assert torch.allclose(resize_images(constant, 3), torch.full((1, 1, 3, 3), 0.25))
    stripes = torch.tensor([0.0, 1.0, 1.0, 0.0]).repeat(4).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    # sampling without antialiasing would give all ones here
    assert torch.allclose(resize_images(stripes, 4), torch.full((1, 1, 4, 4), 0.5), atol=0.04)


def test_augment_identity_without_pad_or_flip():
    x = torch.rand(4, 3, 5, 5)
    assert torch.equal(augment_batch(x, pad=0, flip=False), x)


def test_augment_flip_mirrors_some_images():
    x = torch.rand(64, 2, 4, 6)
    out = augment_batch(x, pad=0, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 10 < int(mirrored.sum()) < 54


def test_augment_crop_shifts_content_within_zero_padding():
    x = torch.rand(32, 1, 5, 5) + 1
    pad = 2
    out = augment_batch(x, pad=pad, flip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = []
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 5, dx : dx + 5])
        ]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert len(set(shifts)) > 5
    again = augment_batch(x, pad=pad, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_crop_and_flip_together():
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(16, 1, 5, 5).contiguous()
    out = augment_batch(x, pad=1, flip=True, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (1,) * 4)
    for i in range(len(x)):
        crops = [padded[i, :, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_augment_keeps_channels_last_and_matches_nchw():
    x = torch.rand(16, 3, 6, 6)
    nchw = augment_batch(x, pad=2, flip=True, generator=torch.Generator().manual_seed(2))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cl = augment_batch(x_cl, pad=2, flip=True, generator=torch.Generator().manual_seed(2))
    assert nchw.is_contiguous()
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert torch.equal(cl, nchw)


def test_iterate_batches_shuffled_covers_every_sample_once():
    x = torch.arange(23.0).view(23, 1, 1, 1)
    y = torch.arange(23)
    gen = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(x, y, 5, shuffle=True, generator=gen))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    seen = torch.cat([yb for _, yb in batches])
    assert torch.equal(seen.sort().values, y)
    assert not torch.equal(seen, y)
    for xb, yb in batches:
        assert torch.equal(xb.view(-1), yb.float())


def test_iterate_batches_in_order_and_drop_last():
    x, y = torch.rand(10, 1, 2, 2), torch.arange(10)
    batches = list(iterate_batches(x, y, 4, shuffle=False, drop_last=True))
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.equal(batches[1][0], x[4:8])


# --- errors ---------------------------------------------------------------------------------------


@contextmanager
def raises(match: str) -> Iterator[pytest.ExceptionInfo[NasError]]:
    """Expect a NasError whose message is one line and matches `match`."""
    with pytest.raises(NasError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


def test_missing_path(tmp_path):
    with raises("no such file or directory"):
        load_dataset(tmp_path / "nope")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("notes.txt", "not a data source: give 'digits'.*npz"),
        ("cifar-10-python.tar.gz", "extract the archive first"),
    ],
)
def test_file_that_is_not_a_data_source(tmp_path, name, match):
    (tmp_path / name).write_text("hello")
    with raises(match):
        load_dataset(tmp_path / name)


def test_empty_folder(tmp_path):
    with raises("no class folders.*digits"):
        load_dataset(tmp_path)


def test_images_without_class_folders(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4), dtype=np.uint8))
    with raises("no class folders: put each class"):
        load_dataset(tmp_path)


def test_class_folder_without_images(tmp_path):
    write_image_folder(tmp_path, {"a": [(4, 4)] * 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("x")
    with raises("class folder .*b has no images"):
        load_dataset(tmp_path)


def test_val_class_folder_unknown_to_train(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2})
    write_image_folder(tmp_path / "val", {"a": [(4, 4)], "zebra": [(4, 4)]})
    with raises("class folder 'zebra' is in .*val but not in .*train"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("content", [b"not an image at all", None])
def test_corrupt_image_names_the_file(tmp_path, content):
    write_image_folder(tmp_path, {"a": [(8, 8)] * 2, "b": [(8, 8)] * 2})
    bad = tmp_path / "b" / "broken.png"
    good = (tmp_path / "b" / "0.png").read_bytes()
    bad.write_bytes(content if content is not None else good[: len(good) // 2])
    with raises("cannot read image .*broken.png"):
        load_dataset(tmp_path)


def test_single_class(tmp_path):
    write_image_folder(tmp_path, {"only": [(4, 4)] * 4})
    with raises("fewer than 2 classes"):
        load_dataset(tmp_path)


def test_class_too_small_to_split_says_how_many(tmp_path):
    write_image_folder(tmp_path, {"a": [(4, 4)] * 3, "b": [(4, 4)]})
    with raises("class 'b' .* has 1 image"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("content", [b"garbage bytes", b"\x80\x02}q\x00(U"])
def test_corrupt_cifar_pickle(tmp_path, content):
    write_cifar10(tmp_path, per_batch=10)
    (tmp_path / "data_batch_3").write_bytes(content)
    with raises("cannot read CIFAR batch .*data_batch_3"):
        load_dataset(tmp_path)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    write_cifar10(tmp_path, per_batch=10)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": print}))
    with raises("test_batch: it refers to builtins.print"):
        load_dataset(tmp_path)


def test_two_cifar_sets_in_one_directory(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=10)
    write_cifar100(tmp_path / "cifar-100-python")
    with raises("more than one CIFAR data set: give .*cifar-10-batches-py or .*cifar-100-python"):
        load_dataset(tmp_path)


def test_incomplete_cifar_directory(tmp_path):
    write_cifar10(tmp_path, per_batch=10)
    (tmp_path / "data_batch_4").unlink()
    with raises("no CIFAR batches .*data_batch_1..5"):
        load_dataset(tmp_path)


def test_cifar_label_out_of_range(tmp_path):
    write_cifar10(tmp_path, per_batch=10)
    batch = pickle.loads((tmp_path / "data_batch_2").read_bytes())
    batch[b"labels"][4] = 10
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(batch))
    with raises("label 10 in CIFAR batch .*data_batch_2 is out of range"):
        load_dataset(tmp_path)


def test_npz_that_is_not_a_zip(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with raises("d.npz is not an .npz archive"):
        load_dataset(tmp_path / "d.npz")
    with open(tmp_path / "e.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with raises("e.npz is not an .npz archive"):
        load_dataset(tmp_path / "e.npz")


def test_npz_with_a_corrupt_member(tmp_path):
    np.savez(tmp_path / "d.npz", x=npz_images(4), y=np.array([0, 1, 0, 1]))
    data = bytearray((tmp_path / "d.npz").read_bytes())
    start = data.index(b"\x93NUMPY", data.index(b"x.npy")) + 200
    data[start : start + 50] = bytes(50)
    (tmp_path / "d.npz").write_bytes(bytes(data))
    with raises("cannot read .*d.npz: .*numpy.savez"):
        load_dataset(tmp_path / "d.npz")


def test_npz_with_object_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([None] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    with raises("cannot read .*d.npz"):
        load_dataset(tmp_path / "d.npz")


@pytest.mark.parametrize("missing", ["x", "y"])
def test_npz_missing_array(tmp_path, missing):
    arrays = {"x": npz_images(4), "y": np.array([0, 1, 0, 1])}
    del arrays[missing]
    np.savez(tmp_path / "d.npz", **arrays)
    with raises(f"no array '{missing}'"):
        load_dataset(tmp_path / "d.npz")


def test_npz_length_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", x=npz_images(4), y=np.array([0, 1, 0]))
    with raises("4 images in x but 3 labels"):
        load_dataset(tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0, 1, -1, 1], "label -1 .* is negative"),
        ([0, 1, 1.5, 0], "label 1.5 .* is not an integer"),
        (["a", "b", "a", "b"], "dtype <U1"),
    ],
)
def test_npz_bad_labels_name_the_value(tmp_path, labels, match):
    np.savez(tmp_path / "d.npz", x=npz_images(4), y=np.array(labels))
    with raises(match):
        load_dataset(tmp_path / "d.npz")


def test_npz_val_label_out_of_range(tmp_path):
    y, y_val = np.array([0, 1, 0, 1]), np.array([0, 2])
    np.savez(tmp_path / "d.npz", x=npz_images(4), y=y, x_val=npz_images(2), y_val=y_val)
    with raises("label 2 in y_val of .* out of range"):
        load_dataset(tmp_path / "d.npz")


def test_npz_class_gap(tmp_path):
    np.savez(tmp_path / "d.npz", x=npz_images(4), y=np.array([0, 2, 0, 2]))
    with raises("class 1 has no images"):
        load_dataset(tmp_path / "d.npz")


def test_npz_single_class(tmp_path):
    np.savez(tmp_path / "d.npz", x=npz_images(4), y=np.zeros(4, dtype=int))
    with raises("fewer than 2 classes"):
        load_dataset(tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((4, 5, 6, 7), dtype=np.uint8), "has shape"),
        (np.full((4, 3, 3), 2.0), "outside \\[0, 1\\]"),
        (np.full((4, 3, 3), 300), "integer values in \\[300, 300\\]"),
    ],
)
def test_npz_bad_images(tmp_path, x, match):
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    with raises(match):
        load_dataset(tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"per_class": 5, "fraction": 0.5}, "both given"),
        ({"fraction": 0.0}, "'fraction' is 0.0"),
        ({"fraction": 1.5}, "'fraction' is 1.5"),
        ({"per_class": 0}, "'per_class' is 0"),
        ({"val_fraction": 0.0}, "'val_fraction' is 0.0"),
        ({"val_fraction": 1.0}, "'val_fraction' is 1.0"),
        ({"image_size": 0}, "'image_size' is 0"),
        ({"seed": -1}, "'seed' is -1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with raises(match):
        load_dataset(**kwargs)


def test_bad_batch_size_and_pad():
    x, y = torch.rand(4, 1, 2, 2), torch.arange(4)
    with raises("batch size is 0"):
        next(iterate_batches(x, y, 0, shuffle=False))
    with raises("pad is -1"):
        augment_batch(x, pad=-1, flip=False)


# ---- cluttered_digits: the bundled task generated from the digits ---------------------------------------

from nas.data import cluttered  # noqa: E402


@pytest.fixture(scope="module")
def cluttered_raw():
    return cluttered.read_cluttered_digits()


def test_cluttered_is_the_same_every_time(cluttered_raw):
    again = cluttered.read_cluttered_digits()
    assert again.x_val is not None and again.y_val is not None
    assert torch.equal(cluttered_raw.x, again.x) and torch.equal(cluttered_raw.x_val, again.x_val)
    assert np.array_equal(cluttered_raw.y, again.y) and np.array_equal(cluttered_raw.y_val, again.y_val)
    # Statistics rather than a pinned digest: 8-bit levels in [0, 1], mostly background, some ink everywhere.
    x = cluttered_raw.x
    assert x.dtype == torch.float32 and x.shape == (8000, 1, 48, 48)
    assert float(x.min()) >= 0 and float(x.max()) == 1
    assert torch.equal(torch.round(x * 255) / 255, x)
    assert 0.04 < float(x.mean()) < 0.12
    assert bool((x.amax(dim=(1, 2, 3)) > 0.5).all())


def test_cluttered_sizes_and_balanced_labels(cluttered_raw):
    assert cluttered_raw.name == "cluttered_digits" and cluttered_raw.classes == tuple("0123456789")
    assert cluttered_raw.x_val is not None and cluttered_raw.y_val is not None
    assert cluttered_raw.x_val.shape == (2000, 1, 48, 48) and len(cluttered_raw.y_val) >= 2000
    for y in (cluttered_raw.y, cluttered_raw.y_val):
        counts = np.bincount(y, minlength=10)
        assert counts.min() >= 0.95 * len(y) / 10 and counts.max() <= 1.05 * len(y) / 10
    assert not np.array_equal(cluttered_raw.y[:100], np.sort(cluttered_raw.y[:100]))   # shuffled


def test_cluttered_exemplar_pools_are_disjoint():
    train, val = cluttered.exemplar_pools()
    assert not set(train) & set(val) and len(train) + len(val) == 1797
    from sklearn.datasets import load_digits
    target = load_digits().target
    for c in range(10):
        n_val, n = int((target[val] == c).sum()), int((target == c).sum())
        assert abs(n_val - 0.3 * n) <= 1


def test_cluttered_images_come_from_their_own_pool():
    # A canvas the size of a digit, no clutter, no noise: every image is one exemplar, untouched.
    params = cluttered.ClutteredParams(canvas=8, scale=(8, 8), fragments=(0, 0), fragment=(1, 1), noise=0,
                                       train=300, val=200)
    raw = cluttered.read_cluttered_digits(params)
    from sklearn.datasets import load_digits
    digits = load_digits()
    levels = np.rint(digits.images / 16 * 255).reshape(len(digits.images), -1)
    train, val = cluttered.exemplar_pools(params)
    for x, y, pool, other in ((raw.x, raw.y, train, val), (raw.x_val, raw.y_val, val, train)):
        assert x is not None and y is not None
        images = np.rint(x.numpy() * 255).reshape(len(x), -1)
        found = (images[:, None, :] == levels[None, pool]).all(axis=2)
        assert found.any(axis=1).all()                                  # each image is an exemplar of the pool
        assert (digits.target[pool][found.argmax(axis=1)] == y).all()   # ... of its label's class
        assert not (images[:, None, :] == levels[None, other]).all(axis=2).any()


def _extent(mask: torch.Tensor) -> np.ndarray:
    """Rows (N, side) of booleans -> the span from the first True to the last of each row."""
    first = mask.float().argmax(dim=1)
    last = mask.shape[1] - 1 - mask.flip(1).float().argmax(dim=1)
    return (last - first + 1).numpy()


def test_cluttered_digits_come_at_several_scales():
    params = cluttered.ClutteredParams(fragments=(0, 0), noise=0, train=500, val=10)
    x = cluttered.read_cluttered_digits(params).x[:, 0] > 0.25
    rows, cols = x.any(dim=2), x.any(dim=1)
    height = np.maximum(_extent(rows), _extent(cols))     # the digit's bounding box, its larger side
    assert height.min() <= 13 and height.max() >= 22 and len(np.unique(height)) >= 8
    top = rows.float().argmax(dim=1).numpy()
    assert top.min() <= 2 and top.max() >= 24             # and at many places


def test_cluttered_parameters_make_the_fingerprint():
    from nas.data import source_fingerprint
    assert source_fingerprint("cluttered_digits") == cluttered.DEFAULT.fingerprint()
    assert f"v{cluttered.GENERATOR_VERSION}" in source_fingerprint("cluttered_digits")
    assert cluttered.ClutteredParams(scale=(10, 24)).fingerprint() != cluttered.DEFAULT.fingerprint()
    assert cluttered.ClutteredParams().fingerprint() == cluttered.DEFAULT.fingerprint()
    with pytest.raises(ValueError, match="inconsistent"):
        cluttered.ClutteredParams(canvas=16, scale=(12, 24))


def test_load_cluttered_digits_subsets_training_only():
    ds = load_dataset("cluttered_digits", per_class=30)
    assert ds.describe() == "cluttered_digits: 300 train / 2000 val, 10 classes, 1x48x48"
    assert np.array_equal(np.bincount(ds.y_train.numpy()), [30] * 10)
    whole = load_dataset("cluttered_digits")
    assert len(whole.y_train) == 8000 and torch.equal(whole.y_val, ds.y_val)
    assert_standardized(ds)


def test_cluttered_study_loads():
    from nas.config import load_study
    cfg = load_study("cluttered")
    assert cfg.proxy.dataset == "cluttered_digits" and cfg.search.sampler == "grid"
    assert cfg.proxy.train.device == "auto"


# --- digests: what a study records of its data ----------------------------------------------------

def npz_with_labels_past_16_mib(path: Path, n: int = 2700, side: int = 80) -> np.ndarray:
    """An .npz of `n` 1x`side`x`side` images whose label array is stored after its first 16 MiB (the issue's
    18 MB file); returns the labels."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 10
    np.savez(path, x=rng.integers(0, 256, (n, 1, side, side), dtype=np.uint8), y=y)
    import zipfile
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("y.npy").header_offset > 16 << 20
    return y


def test_a_change_past_the_first_16_mib_of_a_file_changes_the_digest(tmp_path):
    from nas.data import first_16_mib_fingerprint, source_fingerprint
    data = tmp_path / "big.npz"
    y = npz_with_labels_past_16_mib(data)
    before, before_16 = source_fingerprint(data), first_16_mib_fingerprint(data)
    with np.load(data) as arrays:
        x = arrays["x"]
    np.savez(data, x=x, y=(y + 1) % 10)          # every image relabelled, same size
    assert first_16_mib_fingerprint(data) == before_16     # what effnas saw before: nothing
    assert source_fingerprint(data) != before
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "big.npz").write_bytes(data.read_bytes())
    assert source_fingerprint(copy / "big.npz") == source_fingerprint(data)   # a copy keeps the digest


def test_digests_of_large_sources_are_cached_by_size_and_times(tmp_path, monkeypatch):
    """Sources past CACHE_FROM_BYTES keep each file's digest under $XDG_CACHE_HOME/effnas/digests; an entry
    holds only while the file's size, modification and change times do, so a rewrite is seen even when size
    and modification time are put back."""
    import json
    import os

    from nas.data import digest
    folder = tmp_path / "images"
    for c in range(3):
        (folder / str(c)).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), color=c * 40 + i).save(folder / str(c) / f"{i}.png")
    uncached = digest.source_fingerprint(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "CACHE_FROM_BYTES", 0)
    assert digest.source_fingerprint(folder) == uncached
    [cache] = (tmp_path / "cache" / "effnas" / "digests").iterdir()
    entries = json.loads(cache.read_text())
    assert entries["source"] == str(folder.resolve()) and len(entries["files"]) == 12
    forged = dict(entries["files"], **{"0/0.png": [*entries["files"]["0/0.png"][:3], "0" * 32]})
    cache.write_text(json.dumps({**entries, "files": forged}))
    assert digest.source_fingerprint(folder) != uncached      # an entry whose file kept its size and times is used
    cache.write_text(json.dumps(entries))
    assert digest.source_fingerprint(folder) == uncached
    image = folder / "1" / "2.png"
    stat = image.stat()
    other = (folder / "2" / "2.png").read_bytes()
    assert len(other) == stat.st_size
    image.write_bytes(other)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))           # same size, same modification time
    assert digest.source_fingerprint(folder) != uncached
    image.unlink()
    digest.source_fingerprint(folder)
    assert len(json.loads(cache.read_text())["files"]) == 11           # a file gone drops out of the cache
