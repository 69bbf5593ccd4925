"""Meta-training: Adam on φ through truncated unrolls, with early stopping (Section 3).

An epoch is one optimizee run of `steps` steps on a freshly sampled problem, starting from
zero hidden state, cut into unrolls of `unroll` steps. Each unroll gives one meta-loss and one
Adam step on φ; θ and the hidden state carry their values into the next unroll. Every
`eval_every` epochs φ is frozen and run on a fixed set of validation problems; the φ with the
lowest mean final validation loss is kept.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as onp

from l2l_ref.baselines import BASELINES, mean_final
from l2l_ref.checks import field_types
from l2l_ref.errors import ConfigError
from l2l_ref.frozen import run_on_each
from l2l_ref.fused import fused_meta_gradient
from l2l_ref.optimizer import (
    LearnedOptimizer,
    OptimizerConfig,
    assign_networks,
    init_phi,
    start_hidden,
)
from l2l_ref.problems import (
    Instance,
    Problem,
    ToDevice,
    draw_problems,
    host_float64,
)
from l2l_ref.streams import rng_for
from l2l_ref.unroll import meta_gradient


@dataclass(frozen=True)
class TrainConfig:
    """The meta-training protocol."""

    epochs: int = 100
    steps: int = 100
    unroll: int = 20
    meta_lr: float = 0.01
    # "constant", or "cosine": from meta_lr at the first epoch to meta_lr · meta_lr_final at
    # the last, along half a cosine
    meta_lr_schedule: str = "constant"
    meta_lr_final: float = 0.01
    initial_weight: float = 0.0  # w_0: 0 in the paper, 1 in the released code (Σ from t = 0)
    weights: tuple[float, ...] | None = None  # w_1..w_T of each unroll; None: all 1
    second_order: bool = False
    eval_every: int = 10
    validation_problems: int = 8
    seed: int = 0
    trial: int = 0  # a search's trial: its own φ_0 and training problems (rng_for)

    def __post_init__(self):
        field_types(self)
        for name in ("epochs", "steps", "unroll", "eval_every", "validation_problems"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0 or self.trial < 0:
            raise ConfigError(f"seed and trial must be non-negative, got {self.seed}, {self.trial}")
        if self.steps % self.unroll:
            raise ConfigError(f"steps ({self.steps}) must be a multiple of unroll ({self.unroll})")
        if not (self.meta_lr > 0 and onp.isfinite(self.meta_lr)):
            raise ConfigError(f"meta learning rate must be positive, got {self.meta_lr}")
        if self.meta_lr_schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown meta learning rate schedule {self.meta_lr_schedule!r} "
                f"(choose from {', '.join(SCHEDULES)})"
            )
        if not 0 < self.meta_lr_final <= 1:
            raise ConfigError(f"meta_lr_final must be in (0, 1], got {self.meta_lr_final}")
        if self.weights is not None and len(self.weights) != self.unroll:
            raise ConfigError(f"{len(self.weights)} weights for an unroll of {self.unroll}")
        if any(not (w >= 0 and onp.isfinite(w)) for w in self.unroll_weights()):
            raise ConfigError("meta-loss weights must be finite and non-negative")

    def meta_lr_at(self, epoch: int) -> float:
        """Adam's learning rate on φ during `epoch` (1 … epochs)."""
        return SCHEDULES[self.meta_lr_schedule](self, epoch)

    def unroll_weights(self) -> tuple[float, ...]:
        """w_0, w_1, ..., w_T of Eq. 3 for one unroll."""
        return (self.initial_weight, *(self.weights or (1.0,) * self.unroll))


def _cosine(config: "TrainConfig", epoch: int) -> float:
    progress = (epoch - 1) / max(config.epochs - 1, 1)
    fraction = (
        config.meta_lr_final + (1 - config.meta_lr_final) * (1 + math.cos(math.pi * progress)) / 2
    )
    return config.meta_lr * fraction


SCHEDULES = {"constant": lambda config, epoch: config.meta_lr, "cosine": _cosine}


class NonFiniteMetaLoss(RuntimeError):
    """The meta-loss overflowed: training cannot continue."""

    def __init__(self, epoch: int, unroll_index: int, value: float):
        super().__init__(f"meta-loss is {value} at epoch {epoch}, unroll {unroll_index}")
        self.epoch, self.unroll_index = epoch, unroll_index
        self.result: TrainResult | None = None  # the best φ found before, set by meta_train


# the meta-optimizer on φ (Section 3): the Adam baseline's (init, step), the optimizer of the
# baselines' kind, given the meta-gradient where a baseline is given ∇f
META_INIT, META_STEP = BASELINES["Adam"]


def meta_gradient_function(
    opt_config: OptimizerConfig, second_order: bool, workspace: dict | None = None
) -> Callable:
    """meta_gradient(φ, θ, hidden, instance, t0, weights, m) for training: the hand-written
    first-order backward pass (l2l_ref.fused, keeping its tapes in `workspace`) where the
    architecture's rule says so (its `hand_written`), else the traced definition
    (unroll.meta_gradient)."""
    if opt_config.architecture.hand_written(opt_config, second_order):
        return partial(fused_meta_gradient, workspace=workspace)
    return partial(meta_gradient, second_order=second_order)


def train_epoch(
    phi: dict,
    adam_state: dict,
    instance: Instance,
    m: LearnedOptimizer,
    protocol: TrainConfig,
    to_host: Callable,
    epoch: int = 1,
    workspace: dict | None = None,
) -> tuple:
    """One optimizee run of protocol.steps steps, one meta-Adam step per unroll.

    Returns φ, the Adam state, the meta-loss of each unroll and the final θ. `workspace`: a
    dict kept from one call to the next, where the fused backward pass keeps its tapes.
    """
    theta, hidden = instance.theta0, start_hidden(instance.theta0, m.config)
    weights, losses = protocol.unroll_weights(), []
    gradient = meta_gradient_function(m.config, protocol.second_order, workspace)
    # overflow is caught below, by the check of every unroll's meta-loss
    with onp.errstate(all="ignore"):
        for k in range(protocol.steps // protocol.unroll):
            phi_grad, L, theta, hidden = gradient(
                phi, theta, hidden, instance, k * protocol.unroll, weights, m
            )
            L = float(to_host(L))
            if not onp.isfinite(L):
                raise NonFiniteMetaLoss(epoch, k + 1, L)
            losses.append(L)
            phi, adam_state = META_STEP(
                phi, adam_state, lambda _, g=phi_grad: g, protocol.meta_lr_at(epoch)
            )
    return phi, adam_state, losses, theta


def mean_final_loss(
    phi: dict, instances: list, steps: int, m: LearnedOptimizer, to_host: Callable
) -> float:
    """Mean over instances of f(θ_steps): the early-stopping criterion."""
    return mean_final(run_on_each(phi, instances, steps, m, to_host))


@dataclass
class TrainResult:
    """The best φ found, when, and the curves of the run."""

    phi: dict
    best_epoch: int
    best_validation: float
    meta_losses: list  # mean meta-loss of each epoch
    validation: list  # (epoch, mean final validation loss)
    networks: dict  # optimizee tensor -> the network of φ that serves it


@dataclass
class TrainState:
    """Where meta-training stands after `epoch` epochs: everything it needs to go on, so that a
    run continued from a saved state ends exactly as the same run uninterrupted."""

    epoch: int
    phi: dict
    adam: dict  # Adam's state on φ: {"m", "v", "t"}
    train_rng: dict  # the state of the stream that draws the training problems
    result: TrainResult  # the best φ so far, and the curves


def meta_train(
    problem: Problem,
    opt_config: OptimizerConfig,
    protocol: TrainConfig,
    to_device: ToDevice = host_float64,
    to_host: Callable = onp.asarray,
    on_epoch: Callable | None = None,
    on_best: Callable | None = None,
    state: TrainState | None = None,
    on_state: Callable | None = None,
) -> TrainResult:
    """Meta-train φ on `problem` (Section 3), keeping the φ best on the validation problems.
    Arrays are made by `to_device` (default: host NumPy, float64) and read back by `to_host`.

    on_epoch(epoch, meta_loss, validation_or_None) is called after every epoch; on_best(result)
    with the TrainResult so far whenever a new best φ is found, from epoch 0 (the untrained φ)
    on; on_state(state) with the TrainState after epoch 0 and every epoch, so that a caller can
    save it and continue later by passing it back as `state`.
    """
    train_rng = rng_for(protocol.seed, "train", protocol.trial)
    validation = draw_problems(
        problem, protocol.seed, "validation", protocol.validation_problems, to_device
    )
    networks = assign_networks(validation[0].theta0, problem, opt_config)
    m = LearnedOptimizer(opt_config, networks)

    def validate(phi):
        return mean_final_loss(phi, validation, protocol.steps, m, to_host)

    if state is None:
        phi = init_phi(
            rng_for(protocol.seed, "init", protocol.trial), networks, opt_config, to_device
        )
        best = TrainResult(phi, 0, validate(phi), [], [], networks)
        best.validation.append((0, best.best_validation))
        state = TrainState(0, phi, META_INIT(phi), train_rng.bit_generator.state, best)
        if on_state:  # first: a caller's saved best φ then always has a state to go with it
            on_state(state)
        if on_best:
            on_best(best)
    else:
        train_rng.bit_generator.state = state.train_rng
    phi, adam_state, best = state.phi, state.adam, state.result
    workspace = {}
    for epoch in range(state.epoch + 1, protocol.epochs + 1):
        instance = problem.sample(train_rng, to_device, "train")
        try:
            phi, adam_state, losses, _ = train_epoch(
                phi, adam_state, instance, m, protocol, to_host, epoch, workspace
            )
        except NonFiniteMetaLoss as error:
            error.result = best  # what training had found until then
            raise
        best.meta_losses.append(float(onp.mean(losses)))
        score = None
        if epoch % protocol.eval_every == 0 or epoch == protocol.epochs:
            score = validate(phi)
            best.validation.append((epoch, score))
            if score < best.best_validation:
                best.phi, best.best_epoch, best.best_validation = phi, epoch, score
                if on_best:
                    on_best(best)
        if on_state:
            on_state(TrainState(epoch, phi, adam_state, train_rng.bit_generator.state, best))
        if on_epoch:
            on_epoch(epoch, best.meta_losses[-1], score)
    return best
