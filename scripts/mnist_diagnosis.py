"""Why a meta-training on the MNIST-style problem can stay at chance: what the learned
optimizer does to θ, step by step, next to tuned SGD.

For each checkpoint, on the first few validation problems of a seed (never test problems):
the optimizee's loss, the RMS of its gradient ∇_t, the RMS of the update g_t, the cosine
between g_t and −∇_t, and the RMS of the part of g_t that is the same for every coordinate of a
tensor (each tensor's mean update). An optimizer that has learned to descend has a cosine well
above zero; one whose update is all in the per-tensor mean moves θ without looking at ∇.

    python scripts/mnist_diagnosis.py CHECKPOINT... [--seed 0] [--problems 4] [--sgd-lr 2]
"""

import argparse

import numpy as onp
from autograd import grad

import l2l_ref
from l2l_ref.optimizer import LearnedOptimizer, optimizer_step, start_hidden
from l2l_ref.problems import checked_sample
from l2l_ref.streams import rng_for

STEPS_SHOWN = (0, 1, 5, 10, 25, 50, 99)


def trace(update, instance, steps: int = 100) -> onp.ndarray:
    """Rows (loss, RMS ∇, RMS g, cos(g, −∇), RMS of the per-tensor mean of g), t = 0 … steps−1."""
    gradient = grad(instance.loss)
    theta, state, rows = instance.theta0, None, []
    for t in range(steps):
        g_theta = gradient(theta, t)
        updates, state = update(g_theta, state, theta)
        flat_grad = onp.concatenate([v.ravel() for v in g_theta.values()])
        flat_update = onp.concatenate([v.ravel() for v in updates.values()])
        norms = onp.linalg.norm(flat_update) * onp.linalg.norm(flat_grad)
        uniform = sum(onp.mean(v) ** 2 * v.size for v in updates.values()) / flat_update.size
        rows.append((
            float(instance.loss(theta, t)),
            onp.sqrt(onp.mean(flat_grad**2)),
            onp.sqrt(onp.mean(flat_update**2)),
            -flat_update @ flat_grad / norms,
            onp.sqrt(uniform),
        ))  # fmt: skip
        theta = {k: theta[k] + updates[k] for k in theta}
    return onp.array(rows)


def learned(path: str):
    """The update rule of a saved optimizer: m(∇_t, h_t; φ) on every tensor (Eq. 1)."""
    phi, config, header = l2l_ref.load_checkpoint(path)

    def update(g_theta, hidden, theta):
        hidden = start_hidden(theta, config) if hidden is None else hidden
        return optimizer_step(phi, g_theta, hidden, LearnedOptimizer(config, header["networks"]))

    return update


def show(name: str, rows: onp.ndarray) -> None:
    print(name)
    for t in STEPS_SHOWN:
        loss, rms_grad, rms_update, cosine, uniform = rows[t]
        print(
            f"  step {t:3d}: loss {loss:.4f}  RMS ∇ {rms_grad:.2e}  RMS g {rms_update:.2e}"
            f"  cos(g, −∇) {cosine:+.3f}  RMS of the per-tensor mean of g {uniform:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--sgd-lr", type=float, default=2.0)
    args = parser.parse_args()
    problem = l2l_ref.RunSpec.from_preset("mnist", "paper").make_problem()
    rng = rng_for(args.seed, "validation")
    instances = [
        checked_sample(problem, rng, onp.asarray, "validation") for _ in range(args.problems)
    ]
    print(
        f"mnist, preset paper: mean over the first {args.problems} validation problems"
        f" of seed {args.seed}"
    )
    rules = {path: learned(path) for path in args.checkpoints}
    rules[f"SGD, learning rate {args.sgd_lr:g}"] = lambda g, state, theta: (
        {k: -args.sgd_lr * v for k, v in g.items()},
        None,
    )
    for name, update in rules.items():
        show(name, onp.mean([trace(update, instance) for instance in instances], axis=0))


if __name__ == "__main__":
    main()
