"""A jitted JAX implementation of one meta-step, the peer benchmarks/versus.py times the
reference against. Its own code, written from docs/vectors.md: nothing of l2l-ref runs in it.

One meta-step, as the reference's training runs it: a 20-step unroll of the coordinatewise
2×20 LSTM (Sonnet's cell, gate blocks i, j, f, o, forget bias 1) from θ_0 and zero state, the
optimizee's gradient a constant (the paper's stop-gradient), the meta-loss Σ_{t=1..T} f(θ_t),
its gradient with respect to φ by JAX's reverse mode through a lax.scan over the steps, and
Torch7's Adam on φ: all of it one jax.jit.

Needs jax (the `bench` extra). Never imported by the package.
"""

import math

import jax
import jax.numpy as jnp
import numpy as onp

jax.config.update("jax_enable_x64", True)  # float64 where asked; float32 arrays stay float32


def preprocess(grad, name: str, p: float):
    """(n, 1) gradients → (n, input size): identity, or Appendix A."""
    if name == "identity":
        return grad
    threshold = math.exp(-p)
    large = jnp.abs(grad) >= threshold
    log = jnp.where(large, jnp.log(jnp.maximum(jnp.abs(grad), threshold)) / p, -1.0)
    sign = jnp.where(large, jnp.sign(grad), math.exp(p) * grad)
    return jnp.concatenate([log, sign], axis=1).astype(grad.dtype)


def lstm_cell(layer: dict, x, h, c):
    """z = [x, h] W + b; c' = σ(f + 1) c + σ(i) tanh(j); h' = σ(o) tanh(c')."""
    z = jnp.concatenate([x, h], axis=1) @ layer["W"] + layer["b"]
    i, j, f, o = jnp.split(z, 4, axis=1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def quadratic_loss(data: dict):
    W, y = data["W"], data["y"]
    return lambda theta, t: jnp.mean(jnp.sum((jnp.einsum("bij,bj->bi", W, theta["x"]) - y) ** 2, 1))


def mlp_loss(data: dict, layers: int):
    images, labels, indices = data["images"], data["labels"], data["indices"]
    classes = int(labels.max()) + 1

    def loss(theta, t):
        chosen = indices[t]
        a = images[chosen]
        for k in range(layers):
            a = a @ theta[f"W{k}"] + theta[f"b{k}"]
            a = jax.nn.sigmoid(a) if k < layers - 1 else a
        onehot = jax.nn.one_hot(labels[chosen], classes, dtype=a.dtype)
        return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(a), axis=1))

    return loss


def make_meta_step(loss, networks: dict, config: dict, steps: int, lr: float):
    """The jitted meta-step: (φ, Adam's m, v, step count, θ_0) → (φ', m', v', count', L)."""
    name, p, scale, units = (config[k] for k in ("preprocessing", "param", "scale", "layers"))

    def unroll(phi, theta0):
        hidden = {
            k: [(jnp.zeros((x.size, H), x.dtype),) * 2 for H in units] for k, x in theta0.items()
        }

        def step(carry, t):
            theta, hidden = carry
            grads = jax.grad(loss)(jax.lax.stop_gradient(theta), t)
            grads = jax.lax.stop_gradient(grads)
            new_theta, new_hidden = {}, {}
            for k, g in grads.items():
                net = phi[networks[k]]
                x = preprocess(g.reshape(-1, 1), name, p)
                states = []
                for layer, (h, c) in zip(net["lstm"], hidden[k], strict=True):
                    x, c = lstm_cell(layer, x, h, c)
                    states.append((x, c))
                update = (x @ net["head"]["W"] + net["head"]["b"]) * scale
                new_theta[k] = theta[k] + update.reshape(theta[k].shape)
                new_hidden[k] = states
            return (new_theta, new_hidden), loss(new_theta, t + 1)

        _, losses = jax.lax.scan(step, (theta0, hidden), jnp.arange(steps))
        return jnp.sum(losses)

    def meta_step(phi, m, v, count, theta0):
        L, grad = jax.value_and_grad(unroll)(phi, theta0)
        count = count + 1
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, grad)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grad)
        size = lr * jnp.sqrt(1 - 0.999**count) / (1 - 0.9**count)
        phi = jax.tree.map(lambda p, m, v: p - size * m / (jnp.sqrt(v) + 1e-8), phi, m, v)
        return phi, m, v, count, L, grad

    return jax.jit(meta_step)


def peer(setup, dtype: str):
    """The JAX meta-step of a benchmark setup (benchmarks/meta_step.Setup): its φ, θ_0 and
    data as JAX arrays. Returns (the jitted step's arguments, the step)."""
    instance, config = setup.instance, setup.config
    cast = lambda a: jnp.asarray(onp.asarray(a), dtype=dtype)  # noqa: E731
    theta0 = {k: cast(v) for k, v in instance.theta0.items()}
    data = dict(instance.data)
    if "indices" in data:
        indices = onp.stack([data["indices"](t) for t in range(setup.train.unroll + 1)])
        images = data["images"].reshape(len(data["images"]), -1)
        jax_data = {"images": cast(images), "labels": jnp.asarray(data["labels"]),
                    "indices": jnp.asarray(indices)}  # fmt: skip
        loss = mlp_loss(jax_data, len(theta0) // 2)
    else:
        loss = quadratic_loss({k: cast(data[k]) for k in ("W", "y")})
    phi = jax.tree.map(cast, setup.phi)
    settings = {
        "preprocessing": config.preprocessing, "param": config.preprocessing_param,
        "scale": config.output_scale, "layers": config.layers,
    }  # fmt: skip
    step = make_meta_step(loss, setup.networks, settings, setup.train.unroll, setup.train.meta_lr)
    zeros = jax.tree.map(jnp.zeros_like, phi)
    return (phi, zeros, zeros, jnp.asarray(0, dtype), theta0), step
