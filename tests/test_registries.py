"""Every entry of every registry keeps its contract (issue 27): the problems with each of their
presets, the baselines, the backends. (The architectures have theirs in
tests/test_architectures.py.) A new entry is then held to it without a test of its own."""

import numpy as np
import pytest
from autograd import grad

from l2l_ref import presets
from l2l_ref.backends import BACKENDS, BackendError, get_backend
from l2l_ref.baselines import BASELINES, run_baseline
from l2l_ref.meta_train import TrainConfig, meta_train
from l2l_ref.problems import checked_sample, quadratic, value_and_gradient
from tests.test_datasets import write_idx_folder

ENTRIES = [(name, preset) for name, entry in presets.PROBLEMS.items() for preset in entry.presets]
# what a problem needs to be made small here: image files and a minibatch that fits them
SMALL = {"quadratic": {"batch": 4}, "mnist": {"batch": 2}, "cifar": {"batch": 2}}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_idx_folder(folder, n_train=8, n_test=8)
    return str(folder)


def made(name: str, preset: str, images: str):
    settings = dict(SMALL.get(name, {}))
    if name in ("mnist", "cifar"):
        settings["data_dir"] = images
    return presets.problem_for(name, preset, settings)


@pytest.mark.parametrize(("name", "preset"), ENTRIES)
def test_every_problem_and_preset_keeps_the_contract(name, preset, images):
    """Each split samples an instance that checked_sample accepts; a seed gives the same θ_0;
    the loss is finite at θ_0 with a finite gradient, and a hand-written value and gradient,
    where the family has one, is autograd's; the preset's optimizer trains on it."""
    problem = made(name, preset, images)
    host = lambda a: np.array(a, dtype=np.float64)  # noqa: E731
    for split in ("train", "validation", "test"):
        instance = checked_sample(problem, np.random.default_rng(0), host, split)
        again = problem.sample(np.random.default_rng(0), host, split)
        for key, value in instance.theta0.items():
            assert np.array_equal(value, again.theta0[key]), (split, key)
        loss = instance.loss(instance.theta0, 0)
        gradient = grad(instance.loss)(instance.theta0, 0)
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in gradient.values())
        value, by_hand = value_and_gradient(instance)(instance.theta0, 0)
        assert value == pytest.approx(float(loss), rel=1e-12)
        for key, g in gradient.items():
            np.testing.assert_allclose(by_hand[key], g, rtol=1e-10, atol=1e-14)
    optimizer = presets.optimizer_for(name, preset)
    meta_train(problem, optimizer, TrainConfig(epochs=1, steps=2, unroll=1, validation_problems=1))


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_keeps_the_contract(name):
    """From one θ_0 of a convex problem, at a small rate: f(θ_0), …, f(θ_steps), finite,
    decreasing overall, the same for the same instance, and θ_0 untouched."""
    problem = quadratic(dims=3, batch=2)
    instance = problem.sample(np.random.default_rng(1), np.asarray)
    before = {k: v.copy() for k, v in instance.theta0.items()}
    losses = run_baseline(name, 0.01, instance, 20, np.asarray)
    assert losses.shape == (21,) and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(losses, run_baseline(name, 0.01, instance, 20, np.asarray))
    assert all(np.array_equal(instance.theta0[k], v) for k, v in before.items())


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_keeps_the_contract(name):
    """Named as registered; asarray then to_host gives back the host array in the dtype asked
    for. A backend this machine cannot serve says so with BackendError (one line, exit 2)."""
    try:
        backend = get_backend(name)
    except BackendError as error:
        pytest.skip(f"{name} cannot be served here: {error}")
    assert backend.name == name
    host = np.random.default_rng(0).standard_normal((3, 2))
    for dtype in ("float64", "float32"):
        back = backend.to_host(backend.asarray(host, dtype))
        assert type(back) is np.ndarray and back.dtype == dtype
        np.testing.assert_array_equal(back, host.astype(dtype))
