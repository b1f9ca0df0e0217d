"""Training steps (nas.steps): fused seeds train each seed as its own run would, a failed CUDA graph capture
falls back to the eager step with one warning, and the switches reach the engine."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from nas.builder import build_model
from nas.config import TrainConfig
from nas.data import load_dataset
from nas.proxy import PREPARED_KEPT, fuses_seeds, prepare_data, train, train_seeds
from nas.scaling import scale
from nas.spec import load_spec
from nas.steps import CapturedStep, EagerStep, Replicas, make_optimizer

# One fixed thread: another thread count sums in another order, and two threads beside CPU-heavy work wait
# for each other (three of these tests took 24-31 s each so, against under 4 s with one). No dropout or
# stochastic depth: fused seeds draw their own masks (vmap's randomness="different"), not a lone run's.
CFG = TrainConfig(epochs=1, steps=6, batch_size=32, threads=1, bn_recalibration=2, fuse_seeds="on")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", per_class=40)


@pytest.fixture(scope="module")
def net():
    spec = scale(load_spec("efficientnet_b0"), 0.25, 0.5, 16, name="b0-tiny")
    return dataclasses.replace(spec, dropout=0.0, drop_connect=0.0)


def test_fused_seeds_match_separate_runs(digits, net):
    """Each fused seed keeps its own initialisation, data order and augmentation: its losses, accuracies and
    validation losses are those of the same seed trained alone, within float tolerance."""
    seeds = [3, 4, 5]
    fused = train_seeds(net, digits, CFG, seeds)
    assert [r.job_seeds for r in fused] == [3, 3, 3]
    for seed, together in zip(seeds, fused):
        alone = train(net, digits, dataclasses.replace(CFG, seed=seed, fuse_seeds="off"))
        assert together.status == alone.status == "ok"
        assert together.epochs[0].train_loss == pytest.approx(alone.epochs[0].train_loss, rel=1e-4)
        assert together.epochs[0].val_loss == pytest.approx(alone.epochs[0].val_loss, rel=1e-3)
        assert together.final_acc == pytest.approx(alone.final_acc, abs=2 / len(digits.y_val))
    # and the seeds really differ from each other
    assert len({r.epochs[0].train_loss for r in fused}) == 3


def test_fused_seeds_keep_their_own_dropout(digits):
    """With dropout on, fused seeds draw different masks: two replicas of one initialisation diverge."""
    spec = scale(load_spec("efficientnet_b0"), 0.25, 0.5, 16, name="b0-tiny")
    torch.manual_seed(0)
    a = build_model(dataclasses.replace(spec, dropout=0.5), 10, 1)
    b = build_model(dataclasses.replace(spec, dropout=0.5), 10, 1)
    b.load_state_dict(a.state_dict())
    replicas = Replicas([a, b])
    replicas.train()
    x = torch.randn(1, 4, 1, 16, 16).expand(2, 4, 1, 16, 16)
    out = replicas(x)
    assert out.shape == (2, 4, 10)
    assert not torch.allclose(out[0], out[1])


def test_fused_replicas_are_views_of_the_stacked_weights(net):
    """An optimizer step on the stacked tensors moves each seed's own module: evaluation sees trained weights."""
    models = [build_model(net, 10, 1) for _ in range(2)]
    replicas = Replicas(models)
    stacked = next(iter(replicas.stacked_params.values()))
    with torch.no_grad():
        stacked.add_(1.0)
    first = next(models[1].parameters())
    assert torch.equal(first, stacked[1])


def test_fusing_is_on_by_default_only_on_cuda():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert fuses_seeds(TrainConfig(), cuda) and not fuses_seeds(TrainConfig(), cpu)
    assert fuses_seeds(TrainConfig(fuse_seeds="on"), cpu)
    assert not fuses_seeds(TrainConfig(fuse_seeds="off"), cuda)
    assert not fuses_seeds(TrainConfig(compile=True), cuda)


def test_failed_capture_warns_once_and_trains_eagerly(net, monkeypatch):
    """A capture that raises leaves the eager step in charge: one warning, and the same losses as eager."""

    def step_pair():
        torch.manual_seed(0)
        model = build_model(net, 10, 1)
        replicas = Replicas([model])
        replicas.train()
        opt = make_optimizer(replicas.params, CFG, torch.device("cpu"))
        return EagerStep(replicas, opt, None, 0.1)

    def broken(self, x, y):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(CapturedStep, "_capture", broken)
    warnings_seen: list[str] = []
    captured, eager = CapturedStep(step_pair(), warnings_seen.append), step_pair()
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        x, y = torch.randn(8, 1, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
        assert captured(x, y).item() == pytest.approx(eager(x, y).item(), rel=1e-5)
    assert warnings_seen == ["CUDA graph capture failed (operation not permitted when stream is capturing): "
                             "training this network eagerly (slower)"]


def test_cuda_graphs_switch_is_ignored_on_cpu(digits, net):
    """On the CPU there is nothing to capture: both settings train the same, bitwise, with no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        on = train(net, digits, dataclasses.replace(CFG, cuda_graphs=True))
        off = train(net, digits, dataclasses.replace(CFG, cuda_graphs=False))
    assert on.epochs[0].train_loss == off.epochs[0].train_loss


def test_time_split_adds_up(digits, net):
    r = train(net, digits, CFG)
    assert r.setup_seconds > 0 and r.train_seconds > 0 and r.eval_seconds > 0
    assert r.setup_seconds + r.train_seconds + r.eval_seconds <= r.wall_time + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_captured_step_matches_eager_on_cuda(digits, net):
    """For the same seed, the captured and the eager step give the same losses within bf16 tolerance."""
    cfg = dataclasses.replace(CFG, device="cuda", steps=12, threads=None)
    captured = train(net, digits, dataclasses.replace(cfg, cuda_graphs=True))
    eager = train(net, digits, dataclasses.replace(cfg, cuda_graphs=False))
    assert captured.epochs[0].train_loss == pytest.approx(eager.epochs[0].train_loss, rel=2e-2)


def test_data_is_prepared_once_per_resolution(digits):
    """The seeds and trials of a worker at one resolution reuse one resized copy; another resolution makes
    its own, and only the last few are kept."""
    cpu = torch.device("cpu")
    first = prepare_data(digits, 20, cpu, True)
    assert prepare_data(digits, 20, cpu, True) is first
    assert first.x_train.shape[-1] == 20 and first.x_train.is_contiguous(memory_format=torch.channels_last)
    other = prepare_data(digits, 24, cpu, True)
    assert other is not first and other.x_train.shape[-1] == 24
    for r in range(25, 25 + PREPARED_KEPT):
        prepare_data(digits, r, cpu, True)
    assert prepare_data(digits, 20, cpu, True) is not first     # evicted, made again


def test_a_frontier_trains_each_network_s_seeds_as_one_fused_run(tiny_study):
    """Where seeds fuse, the frontier queues one run per network holding every seed, and its table pools
    the seeds of that run as it pools separate runs."""
    import optuna

    from nas.config import load_study
    from nas.search.frontier import RUN, FrontierJob, compound_family, paper_family
    from nas.search.results import frontier_table

    cfg = load_study(tiny_study(name="fused", **{"threads: 1": "threads: 1, fuse_seeds: on"}))
    job = FrontierJob(cfg, (compound_family("searched", 1.2, 1.1, 1.15), paper_family()), (0.0,), seeds=2,
                      latency=None)
    study = optuna.create_study(study_name=job.study_name, storage=optuna.storages.InMemoryStorage())
    job.prepare(study, lambda msg: None)
    study.optimize(job.objective(), n_trials=1)
    [run] = study.trials
    assert run.state.name == "COMPLETE" and run.user_attrs[RUN][1:] == [0, 2]   # phi 0: one network for both
    assert len(run.user_attrs["seed_accuracies"]) == 2 and job.done(study)
    table = frontier_table(study)
    assert table["seeds"].tolist() == [2, 2]
