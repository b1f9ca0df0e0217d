"""Inputs that declare more than the machine has: memory judged from declared shapes before any allocation,
threads capped at the cores the process may use (issue 23, classes 4 and 5)."""

from __future__ import annotations

import pickle
import resource
from pathlib import Path

import numpy as np
import pytest
import yaml

import nas.memory
from nas.builder import build_model
from nas.data import load_dataset
from nas.device import cpu_threads, default_threads
from nas.errors import NasError
from nas.memory import activation_elements, network_weights
from nas.spec import load_spec

SHIPPED = ("efficientnet_b0", "efficientnet_lite0", "efficientnetv2_s", "mnasnet_b0")


def _one_line_error(code: int, out: str, err: str, *matches: str) -> None:
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and all(m in err for m in matches), err


@pytest.mark.parametrize("name", SHIPPED)
def test_weight_estimate_is_the_built_networks_convolution_and_linear_weights(name):
    spec = load_spec(name)
    model = build_model(spec, num_classes=10)
    assert network_weights(spec, 10) == sum(p.numel() for p in model.parameters() if p.dim() > 1)


def test_training_keeps_more_feature_maps_than_inference_and_both_grow_with_resolution(b0):
    small, large = (activation_elements(b0, r, training=True) for r in (112, 224))
    assert 3.5 < large / small < 4.5                        # maps grow with the image's area
    assert activation_elements(b0, 224, training=False) < large / 2


def _network_file(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load(Path(nas.spec.SPACES_DIR / "efficientnet_b0.yaml").read_text())
    spec.update(changes)
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_head_of_ten_million_channels_is_refused_before_it_is_built(tmp_path, run_cli):
    path = _network_file(tmp_path, head={"channels": 10_000_000})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _one_line_error(*run_cli("materialize", "--space", path, "--alpha", "1", "--beta", "1", "--gamma", "1",
                             "--phi", "0", "--quiet"), "a network of 13,202 M weights", "a head of 10000000", "of memory")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000      # KiB: nothing built


def test_a_million_repeats_is_refused_by_the_network_file_check(tmp_path, run_cli):
    spec = yaml.safe_load(Path(nas.spec.SPACES_DIR / "efficientnet_b0.yaml").read_text())
    spec["stages"][1]["repeats"] = 1_000_000
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(spec))
    _one_line_error(*run_cli("materialize", "--space", path, "--preset", "paper", "--phi", "0", "--quiet"),
                    "stages[1].repeats", "1..1000")


def test_a_latency_batch_larger_than_memory_is_one_line(run_cli):
    _one_line_error(*run_cli("latency", "--batch-size", "4096", "--resolution", "4096", "--threads", "1", "--quiet"),
                    "a batch of 4096 image(s) at 4096 px", "smaller batch size or resolution")


def test_synthetic_benchmark_images_larger_than_memory_are_one_line(run_cli):
    _one_line_error(*run_cli("bench", "proxy", "--images", "1000000", "--resolutions", "1024", "--threads", "1"),
                    "1000000 synthetic images at 1024 px", "TB of memory")


def test_an_npz_is_judged_from_its_headers_before_its_arrays_are_read(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=np.zeros((8, 1000, 1000), np.uint8), y=np.arange(8) % 2)   # 8 MB in ~10 KiB
    monkeypatch.setattr(nas.memory, "available_bytes", lambda: 20_000_000)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the arrays were read"))
    with pytest.raises(NasError, match=r"big.npz \(x \(8, 1000, 1000\)\) needs about 72 MB of memory, more than "
                                       r"the 20 MB this machine has free: store fewer or smaller images"):
        load_dataset(str(path))


class _Allocating:
    """What a hostile pickle can do with the allowed numpy.ndarray: allocate any shape it names."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return np.ndarray, (self.shape,)


def test_cifar_pickles_cannot_allocate_arrays_their_files_do_not_hold(tmp_path):
    good = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [i % 10 for i in range(10)]}
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(pickle.dumps(good))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Allocating((8, 8000, 8000)), b"labels": [0]}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(NasError, match=r"data_batch_1: it declares an array of shape \(8, 8000, 8000\) "
                                       r"\(4,096,000,000 bytes\), more than the file's \d+ bytes hold"):
        load_dataset(str(tmp_path))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(good))       # real arrays still load
    assert len(load_dataset(str(tmp_path)).y_train) > 0


def test_threads_beyond_the_cores_are_capped_in_one_line(capsys):
    cores = default_threads()
    assert cpu_threads(None) == cores and cpu_threads(1) == 1
    assert cpu_threads(cores + 4093) == cores and cpu_threads(cores + 4093) == cores
    err = capsys.readouterr().err
    assert err == f"threads {cores + 4093}: this process may run on {cores} CPU core(s); using {cores} thread(s)\n"


@pytest.mark.parametrize("resolution", ["0", "7", "4097"])
def test_a_resolution_outside_the_networks_range_is_refused_not_replaced(run_cli, resolution):
    """--resolution 0 used to train at the base's 224 px without a word."""
    _one_line_error(*run_cli("train", "--resolution", resolution, "--epochs", "1", "--quiet"),
                    f"--resolution {resolution}: must be an integer in 8..4096")


def test_an_npz_of_images_without_pixels_is_one_line(tmp_path, run_cli):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((4, 0, 0), np.uint8), y=np.arange(4) % 2)
    _one_line_error(*run_cli("train", "--dataset", path, "--epochs", "1", "--quiet"),
                    "has shape (4, 0, 0): images of 0x0 pixels hold nothing to train on")


@pytest.mark.parametrize("args, match", [
    (["report", "nostudy", "--out", "{folder}"], "--out {folder} is a folder: give a file name, such as "
                                                 "{folder}/report.html"),
    (["report", "nostudy", "--out", "/proc/report.html"], "--out /proc/report.html cannot be written"),
    (["arch", "export", "nostudy", "--trial", "0", "--out", "{folder}"], "is a folder: give a file name, such as "
                                                                         "{folder}/my_base.yaml"),
    (["frontier", "nostudy.yaml", "--out", "{file}"], "--out {file} is a file: give a folder to write into"),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, run_cli, args, match):
    """Before: tracebacks (IsADirectoryError, FileNotFoundError), and `nas frontier --out FILE` only after
    training every member. Now one line before the study is even looked up (none exists here)."""
    names = {"folder": tmp_path, "file": tmp_path / "taken.txt"}
    names["file"].write_text("kept")
    _one_line_error(*run_cli(*(a.format(**names) for a in args)), match.format(**names))
    assert names["file"].read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]


def test_an_image_folder_is_judged_before_its_images_are_decoded(tmp_path, monkeypatch):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / cls / f"{i}.png")
    monkeypatch.setattr(nas.memory, "available_bytes", lambda: 10_000)
    monkeypatch.setattr(Image.Image, "resize", lambda *a, **k: pytest.fail("an image was decoded"))
    with pytest.raises(NasError, match=r"6 images of 64 px in .* needs about 369 kB of memory, more than the "
                                       r"10 kB this machine has free: give a smaller image_size"):
        load_dataset(str(tmp_path))
