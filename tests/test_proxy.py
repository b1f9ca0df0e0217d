"""The proxy-training engine: it learns, it is repeatable, and it reports honestly how a run ended."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nas.config import TrainConfig
from nas.data import load_dataset
from nas.errors import NasError
from nas.proxy import Continuation, lr_factor, recalibrate_bn, train, train_seeds
from nas.scaling import scale
from nas.spec import load_spec

FAST = dict(epochs=3, batch_size=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small_net():
    """A down-scaled B0 (half width, half depth): the kind of proxy base a study uses."""
    return scale(load_spec("efficientnet_b0"), 0.5, 0.5, 32, name="b0-small")


def test_training_on_digits_learns(digits, small_net):
    result = train(small_net, digits, TrainConfig(**FAST))
    assert result.status == "ok" and len(result.epochs) == 3
    assert result.final_acc > 0.85          # chance is 0.10
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss
    assert result.train_images_per_sec > 0 and result.wall_time > 0 and result.peak_memory_mb > 0
    assert result.resolution == 32 and result.device == "cpu"


def test_same_seed_same_result_other_seed_differs(digits, small_net):
    # Bitwise only at a fixed thread count: a run's share of the cores follows the machine's load, and
    # another count sums in another order (losses then agree to about 1e-7).
    cfg = TrainConfig(epochs=2, seed=3, threads=1)
    a, b = train(small_net, digits, cfg), train(small_net, digits, cfg)
    assert a.accuracies == b.accuracies
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    c = train(small_net, digits, TrainConfig(epochs=2, seed=4, threads=1))
    assert [e.train_loss for e in c.epochs] != [e.train_loss for e in a.epochs]


def test_validating_only_the_last_epoch_gives_the_same_final_result(digits, small_net):
    # What a search scores is the last epoch's validation: skipping the others (a fifth of an epoch's time
    # each on the CPU) must leave it, and the images it got right, exactly as they were.
    every = train(small_net, digits, TrainConfig(epochs=3, seed=5, threads=1))
    last = train(small_net, digits, TrainConfig(epochs=3, seed=5, threads=1, validate_each_epoch=False))
    assert last.accuracies == [None, None, every.final_acc] and every.accuracies[0] is not None
    assert last.final_acc == last.best_acc == every.final_acc
    assert torch.equal(last.val_correct, every.val_correct)
    assert [e.train_loss for e in last.epochs] == [e.train_loss for e in every.epochs]


def test_a_continued_run_ends_where_an_uninterrupted_one_does(digits, small_net, tmp_path):
    # Budget racing's promoted candidates continue a lower rung's training: stopped after 1 of 2 epochs (weights,
    # optimizer, data order, dropout and drop-connect's random state kept) and continued, a run must end
    # exactly as one run of 2 epochs: the same losses, accuracy and images right.
    cfg = TrainConfig(epochs=2, seed=6, threads=1, validate_each_epoch=False)
    whole = train(small_net, digits, cfg)
    half = train_seeds(small_net, digits, cfg, [6], continuation=Continuation(tmp_path, 1, save_as="r0", tag="t"))
    assert half[0].status == "ok" and len(half[0].epochs) == 1 and (tmp_path / "r0-seed6.pt").is_file()
    assert half[0].accuracies[-1] is not None and half[0].final_acc < whole.final_acc
    rest = train_seeds(small_net, digits, cfg, [6],
                       continuation=Continuation(tmp_path, 2, resume_from="r0", tag="t"))[0]
    assert rest.continued and [e.train_loss for e in rest.epochs] == [e.train_loss for e in whole.epochs]
    assert rest.final_acc == whole.final_acc and torch.equal(rest.val_correct, whole.val_correct)
    assert rest.reason == ""
    # A state kept for other runs (another tag) is not used: the run trains from the start, to the same end.
    again = train_seeds(small_net, digits, cfg, [6],
                        continuation=Continuation(tmp_path, 2, resume_from="r0", tag="other"))[0]
    assert again.reason.startswith("trained from the start: no usable state kept as r0")
    assert not again.continued and again.final_acc == whole.final_acc


def test_callback_sees_every_epoch_and_can_stop(digits, small_net):
    seen = []

    def callback(epoch: int, acc: float) -> bool:
        seen.append((epoch, acc))
        return epoch == 2

    result = train(small_net, digits, TrainConfig(epochs=5), callback=callback)
    assert result.status == "stopped" and "after epoch 2" in result.reason
    assert [e for e, _ in seen] == [1, 2] and len(result.epochs) == 2
    assert [a for _, a in seen] == result.accuracies


class _NaNAfter(nn.Module):
    """A real small classifier whose output turns NaN after `calls` forward passes in training."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.calls, self.left = calls, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.left -= 1
            if self.left < 0:
                return out * float("nan")
        return out


def test_nan_loss_ends_the_run_with_a_reason(digits):
    result = train(_NaNAfter(calls=30), digits, TrainConfig(epochs=4, channels_last=False), resolution=8)
    assert result.status == "diverged" and "nan" in result.reason and "epoch 2" in result.reason
    assert len(result.epochs) == 1 and math.isfinite(result.final_acc)   # the good epoch is kept


class _OutOfMemory(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_reported_as_such(digits):
    result = train(_OutOfMemory(), digits, TrainConfig(epochs=1, channels_last=False), resolution=8)
    assert result.status == "oom" and "out of memory" in result.reason and result.epochs == []


def test_steps_budget_overrides_epochs(digits, small_net):
    seen = []
    result = train(small_net, digits, TrainConfig(epochs=50, steps=30, batch_size=64),
                   callback=lambda e, a: seen.append(e) and False)
    # 1438 images / 64 = 22 steps an epoch, so 30 steps are 2 epochs
    assert len(result.epochs) == 2 and seen == [1, 2]


def test_learning_rate_schedule():
    total, warmup = 100, 10
    factors = [lr_factor(s, total, warmup, "cosine") for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))          # decays monotonically
    assert factors[-1] < 0.01
    assert lr_factor(50, total, warmup, "constant") == 1.0


def test_recalibrated_bn_statistics_are_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3))
    x = torch.randn(256, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 5.0
    recalibrate_bn(model, x, batch_size=64, batches=4)    # 4 x 64 = every image once
    bn = model[0]
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, x.var((0, 2, 3)), rtol=0.02)
    assert bn.momentum == 0.1 and not model.training


@pytest.mark.parametrize("field, value, match", [
    ("epochs", 0, "'epochs' is 0: must be an integer >= 1"), ("epochs", True, "'epochs' is True"),
    ("epochs", 2.5, "'epochs' is 2.5"), ("lr", -1.0, "'lr' is -1.0"), ("lr", float("nan"), "'lr' is nan"),
    ("momentum", "abc", "'momentum' is 'abc'"), ("eval_batch_size", 0, "'eval_batch_size' is 0"),
    ("warmup_epochs", float("inf"), "'warmup_epochs' is inf"), ("optimizer", "adam", "one of sgd, adamw"),
    ("amp", "fp8", "one of auto, bf16, off"), ("label_smoothing", 1.0, "label_smoothing"),
    ("device", "tpu", "auto, cpu, cuda or cuda:N"),
])
def test_bad_settings_are_rejected(field, value, match):
    with pytest.raises(NasError, match=match):
        TrainConfig(**{field: value})


def test_cuda_on_a_cpu_machine_is_a_clear_error(digits, small_net):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(NasError, match="this torch build sees no CUDA GPU"):
        train(small_net, digits, TrainConfig(device="cuda"))


@pytest.mark.slow
def test_default_nas_train_reaches_95_percent(digits):
    """B0 on digits with default settings learns the task (>= 95 %). How fast is a benchmark figure
    (docs/benchmarks.md: under a minute on the earlier Xeon, about 4x that on the AVX2 EPYC)."""
    result = train(load_spec("efficientnet_b0").replace(resolution=32), digits, TrainConfig())
    assert result.final_acc >= 0.95
