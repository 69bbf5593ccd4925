"""Meta-training end to end in small: determinism, learning, early stopping, divergence."""

import numpy as np
import pytest

from l2l_ref.backends import get_backend
from l2l_ref.meta_train import NonFiniteMetaLoss, TrainConfig, meta_train
from l2l_ref.optimizer import OptimizerConfig
from l2l_ref.problems import quadratic
from l2l_ref.tree import flatten

BACKEND = get_backend("numpy")


def train(seed=0, dtype="float64", **overrides):
    settings = dict(
        epochs=6, steps=10, unroll=5, meta_lr=0.01, eval_every=2, validation_problems=2, seed=seed
    )
    settings.update(overrides)
    calls = []
    result = meta_train(
        quadratic(batch=8),
        OptimizerConfig(layers=(6, 6)),
        TrainConfig(**settings),
        lambda a: BACKEND.asarray(a, dtype),
        BACKEND.to_host,
        on_best=lambda best: calls.append((best.best_epoch, best.best_validation)),
    )
    return result, calls


def test_same_seed_same_phi_bit_for_bit():
    a, _ = train(seed=3)
    b, _ = train(seed=3)
    c, _ = train(seed=4)
    fa, fb, fc = flatten(a.phi), flatten(b.phi), flatten(c.phi)
    assert all(fa[k].tobytes() == fb[k].tobytes() for k in fa)
    assert a.meta_losses == b.meta_losses
    assert any(fa[k].tobytes() != fc[k].tobytes() for k in fa)


def test_early_stopping_keeps_the_best_validated_phi():
    result, calls = train(epochs=10)
    scores = dict(result.validation)
    assert [epoch for epoch, _ in result.validation] == [0, 2, 4, 6, 8, 10]
    assert result.best_validation == min(scores.values())
    assert scores[result.best_epoch] == result.best_validation
    # on_best fires at epoch 0 and at every strict improvement, in order
    assert calls[0][0] == 0
    assert [s for _, s in calls] == sorted((s for _, s in calls), reverse=True)
    assert calls[-1] == (result.best_epoch, result.best_validation)


def test_meta_training_lowers_the_validation_loss():
    result, _ = train(epochs=40, eval_every=10, meta_lr=0.03)
    assert result.best_validation < 0.5 * result.validation[0][1]


def test_float32_trains_in_float32():
    result, _ = train(dtype="float32")
    assert all(v.dtype == np.float32 for v in flatten(result.phi).values())


def test_non_finite_meta_loss_names_epoch_and_unroll():
    with pytest.raises(NonFiniteMetaLoss, match=r"epoch 1, unroll 2"):
        train(dtype="float32", meta_lr=1e30)
