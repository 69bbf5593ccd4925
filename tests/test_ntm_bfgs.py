"""NTM-BFGS (l2l_ref.architectures.ntm_bfgs) beyond the architecture contract: its memory
against a dense n × n matrix written naively, and the paper's claim that one read head and
three write heads with two GACs can express BFGS, checked by construction against a textbook
BFGS run. The contract itself (shapes, permutations, finite differences, backends,
checkpoints, the memory estimate) is tests/test_architectures.py's, over every architecture."""

import numpy as np
import pytest

from l2l_ref.architectures import NTMBFGS, OptimizerConfig
from l2l_ref.architectures.ntm_bfgs import memory_read, memory_write, ntm_step

SIZES = {"a": 4, "b": 2}  # two tensors: the memory's sums run over both


def ntm_config(**settings) -> OptimizerConfig:
    return OptimizerConfig(architecture=NTMBFGS(**settings))


@pytest.mark.parametrize("window", [1, 3, 5, 40])
def test_the_window_holds_the_last_writes_of_a_dense_memory(window):
    """Reading the window form after each step equals M r for the dense M_t = I + (1/N) Σ a bᵀ
    over the writes of the last `window` steps (all of them when the window is longer than
    the run), written naively as an N × N matrix."""
    rng = np.random.default_rng(0)
    config = ntm_config(write_heads=2, read_heads=2, window=window)
    N = sum(SIZES.values())
    state = {name: config.architecture.start(np.zeros(n), config) for name, n in SIZES.items()}
    memory = {name: (s["a"], s["b"]) for name, s in state.items()}
    writes = []
    for _ in range(8):
        a, b = ({n: rng.standard_normal((k, 2)) for n, k in SIZES.items()} for _ in range(2))
        memory = memory_write(memory, a, b)
        writes.append((np.concatenate([a["a"], a["b"]]), np.concatenate([b["a"], b["b"]])))
        dense = np.eye(N) + sum(A @ B.T for A, B in writes[-window:]) / N
        r = {n: rng.standard_normal((k, 2)) for n, k in SIZES.items()}
        read = memory_read(memory, r)
        expected = dense @ np.concatenate([r["a"], r["b"]])
        np.testing.assert_allclose(np.concatenate([read["a"], read["b"]]), expected, rtol=1e-12)


def quadratic(rng, N):
    """f(θ) = ½ θᵀQθ − cᵀθ with Q's eigenvalues in [0.5, 1.5], so that BFGS's unit steps from
    H_0 = I converge."""
    basis, _ = np.linalg.qr(rng.standard_normal((N, N)))
    Q = basis @ np.diag(rng.uniform(0.5, 1.5, N)) @ basis.T
    return Q, rng.standard_normal(N)


def textbook_bfgs(Q, c, theta, iterations):
    """BFGS on the inverse Hessian with H_0 = I and unit steps: s = −H∇, θ += s, and
    H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ with ρ = 1/(yᵀs) (Nocedal & Wright, eq. 6.17)."""
    H, N = np.eye(len(theta)), len(theta)
    gradient = Q @ theta - c
    for _ in range(iterations):
        s = -H @ gradient
        theta = theta + s
        new_gradient = Q @ theta - c
        y, rho = new_gradient - gradient, 1.0 / ((new_gradient - gradient) @ s)
        H = (np.eye(N) - rho * np.outer(s, y)) @ H @ (np.eye(N) - rho * np.outer(y, s))
        H += rho * np.outer(s, s)
        gradient = new_gradient
    return theta, H


def gac(values: dict) -> float:
    """What a global averaging cell gives every coordinate: the mean over all of them."""
    return sum(v.sum() for v in values.values()) / sum(v.size for v in values.values())


def bfgs_controller(net, x, state, config):
    """A controller computing BFGS exactly, with what NTM-BFGS's controller has: its own
    coordinate's gradient and previous read (x = [∇, i], identity preprocessing), its own
    state, and two global averages. One BFGS iteration takes three optimizee steps, since one
    read head reads once per step and the read reaches the controller a step later:

    A: read H_{k-1} ∇_k (r = ∇_k); no write, no update;
    B: y = ∇_k − ∇_{k-1}, Hy = H_{k-1} ∇_k + s_{k-1} (as s_{k-1} = −H_{k-1} ∇_{k-1});
       GACs m1 = mean(y s), m2 = mean(y Hy); with the memory's 1/N, ρ = 1/(N m1), and the
       three writes (1/m1 + m2/m1²) s sᵀ, −(Hy/m1) sᵀ, −(s/m1) Hyᵀ make H_k
       (H + (ρ + ρ² yᵀHy) s sᵀ − ρ Hy sᵀ − ρ s Hyᵀ); read −H_k ∇_k (r = −∇_k);
    C: the update is that read, s_k; remember ∇_k and s_k.
    """
    first = next(iter(state.values()))  # the phase and whether BFGS has begun: all alike
    phase = first["phase"]
    gradient = {name: v[:, :1] for name, v in x.items()}
    read = {name: v[:, 1:2] for name, v in x.items()}
    zero = {name: np.zeros_like(g) for name, g in gradient.items()}
    u, r, heads = zero, zero, {name: [zero[name]] * 6 for name in x}
    new_state = {name: dict(s, phase=(phase + 1) % 3) for name, s in state.items()}
    if phase == 0:
        r = gradient
    elif phase == 1:
        r = {name: -g for name, g in gradient.items()}
        if first["started"]:
            s = {name: state[name]["s"] for name in x}
            y = {name: gradient[name] - state[name]["gradient"] for name in x}
            Hy = {name: read[name] + s[name] for name in x}
            m1 = gac({name: y[name] * s[name] for name in x})
            m2 = gac({name: y[name] * Hy[name] for name in x})
            heads = {
                name: [(1 / m1 + m2 / m1**2) * s[name], -Hy[name] / m1, -s[name] / m1,
                       s[name], s[name], Hy[name]]
                for name in x
            }  # fmt: skip
    else:
        u = read
        for name in x:
            new_state[name] |= {"gradient": gradient[name], "s": read[name], "started": True}
    outputs = {
        name: np.concatenate([u[name], r[name], *heads[name]], axis=1) for name in x
    }  # u, r, a of heads 1-3, b of heads 1-3
    return outputs, new_state


def test_one_read_and_three_write_heads_with_two_gacs_express_bfgs():
    """The paper's claim, checked by construction: NTM-BFGS's memory machinery (ntm_step, the
    step training runs) driven by bfgs_controller follows textbook BFGS on a quadratic, every
    third step: θ_{3k} is BFGS's θ_k, and M, once step B has written it, BFGS's H_k, to
    rounding. The controller is
    written by hand rather than set in φ: an LSTM's tanh and sigmoid units compute the
    products and the quotients by m1 only approximately (docs/conventions.md, NTM-BFGS)."""
    rng = np.random.default_rng(3)
    N, K = sum(SIZES.values()), 8
    Q, c = quadratic(rng, N)
    theta0 = rng.standard_normal(N)
    config = ntm_config(window=3 * K + 2)
    split = np.cumsum(list(SIZES.values()))[:-1]
    theta = dict(zip(SIZES, np.split(theta0, split), strict=True))
    hidden = {name: config.architecture.start(v, config) for name, v in theta.items()}
    for name in theta:
        hidden[name]["controller"] = {"phase": 0, "started": False}
    for _ in range(3 * K + 2):  # K iterations, and the A and B that write H_K
        gradient = Q @ np.concatenate(list(theta.values())) - c
        columns = dict(zip(SIZES, np.split(gradient.reshape(-1, 1), split), strict=True))
        updates, hidden = ntm_step(bfgs_controller, None, columns, hidden, config)
        theta = {name: theta[name] + updates[name].reshape(-1) for name in theta}
    expected_theta, expected_H = textbook_bfgs(Q, c, theta0, K)
    A = np.concatenate([hidden[name]["a"] for name in SIZES])
    B = np.concatenate([hidden[name]["b"] for name in SIZES])
    np.testing.assert_allclose(np.eye(N) + A @ B.T / N, expected_H, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.concatenate(list(theta.values())), expected_theta, rtol=1e-9)
    # and it is BFGS at work: 8 iterations took the gradient far below gradient descent's
    assert np.linalg.norm(Q @ expected_theta - c) < 1e-3 * np.linalg.norm(Q @ theta0 - c)
