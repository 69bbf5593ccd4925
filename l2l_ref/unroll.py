"""The optimizee's unrolled training and the meta-loss of Eq. 3.

    θ_{t+1} = θ_t + g_t,   [g_t, h_{t+1}] = m(∇_t, h_t, φ),   ∇_t = ∇_θ f(θ_t)
    L(φ) = Σ_t w_t f(θ_t)

By default the gradient fed to m is a constant for differentiation (the paper's ∂∇_t/∂φ = 0,
Figure 2's dashed edges); `second_order=True` keeps the exact derivative, whose backward pass
takes Hessian-vector products of f.
"""

from collections.abc import Callable, Sequence
from operator import add

from autograd import grad, grad_and_aux
from autograd.tracer import getval

from l2l_ref.optimizer import LearnedOptimizer, optimizer_step
from l2l_ref.problems import Instance
from l2l_ref.tree import tree_map


def unroll(
    phi: dict,
    theta: dict,
    hidden: dict,
    instance: Instance,
    t0: int,
    length: int,
    m: LearnedOptimizer,
    *,
    second_order: bool = False,
    on_step: Callable | None = None,
) -> tuple:
    """Run `length` optimizee steps from θ_{t0} with the optimizer m and its φ (Eq. 1,
    Figure 2).

    Returns the losses [f(θ_{t0}), ..., f(θ_{t0+length})], θ_{t0+length} and the hidden state.
    on_step(t, ∇_t, g_t, h_{t+1}, θ_{t+1}, f(θ_{t+1})), if given, sees the values of each step
    (the reference vectors record them).
    """
    gradient = grad(instance.loss)
    losses = [instance.loss(theta, t0)]
    for t in range(t0, t0 + length):
        point = theta if second_order else tree_map(getval, theta)
        grads = gradient(point, t)
        updates, hidden = optimizer_step(phi, grads, hidden, m)
        theta = tree_map(add, theta, updates)
        losses.append(instance.loss(theta, t + 1))
        if on_step:
            on_step(t, *tree_map(getval, (grads, updates, hidden, theta, losses[-1])))
    return losses, theta, hidden


def meta_loss(losses: Sequence, weights: Sequence[float]):
    """Eq. 3 for one unroll: L = Σ_{t=0..T} w_t f(θ_t).

    The paper's L has w_0 = 0 (f(θ_0) does not depend on φ); the released code adds f(θ_0),
    which changes the value and not the gradient.
    """
    if len(weights) != len(losses):
        raise ValueError(f"{len(weights)} weights for {len(losses)} losses")
    terms = [w * f for w, f in zip(weights, losses, strict=True) if w != 0]
    # all-zero weights: L = 0, still a function of φ so that its gradient is defined
    return sum(terms[1:], terms[0]) if terms else 0.0 * losses[-1]


def meta_gradient(
    phi: dict,
    theta: dict,
    hidden: dict,
    instance: Instance,
    t0: int,
    weights: Sequence[float],
    m: LearnedOptimizer,
    *,
    second_order: bool = False,
    on_step: Callable | None = None,
) -> tuple:
    """∂L/∂φ of one truncated unroll, with L, θ and the hidden state it ends in.

    The unroll starts from the carried (θ, hidden) and returns them as values only: truncated
    backpropagation lets values cross the cut between unrolls and no gradient (§1).
    """

    def objective(phi):
        losses, theta_end, hidden_end = unroll(
            phi,
            theta,
            hidden,
            instance,
            t0,
            len(weights) - 1,
            m,
            second_order=second_order,
            on_step=on_step,
        )
        L = meta_loss(losses, weights)
        return L, (getval(L), tree_map(getval, (theta_end, hidden_end)))

    phi_grad, (L, (theta_end, hidden_end)) = grad_and_aux(objective)(phi)
    return phi_grad, L, theta_end, hidden_end
