"""The mapping of docs/vectors.md between the vectors' LSTM layout and Flax's LSTMCell, checked.

One cell step of a random layer, in float64: Flax linen's and nnx's cells loaded with φ by the
mapping must give this project's h' and c'; linen's gradient, mapped back, must equal the
gradient of the project's cell (written here in jax.numpy). Needs jax and flax (not
dependencies of l2l-ref):

    pip install flax && python docs/examples/flax_mapping.py
"""

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from flax import linen, nnx  # noqa: E402

n, n_in, H = 7, 2, 4
rng = np.random.default_rng(0)
W, b = rng.standard_normal((n_in + H, 4 * H)), rng.standard_normal(4 * H)
x, h, c = (rng.standard_normal((n, k)) for k in (n_in, H, H))
# Flax's gate names and the vectors' column blocks i, j, f, o (Flax's g is the vectors' j)
BLOCKS = {
    "i": slice(0, H),
    "g": slice(H, 2 * H),
    "f": slice(2 * H, 3 * H),
    "o": slice(3 * H, 4 * H),
}


def project_cell(W, b):
    """The vectors' cell: z = [x, h] W + b; c' = σ(f + 1) c + σ(i) tanh(j); h' = σ(o) tanh(c')."""
    i, j, f, o = jnp.split(jnp.concatenate([x, h], axis=1) @ W + b, 4, axis=1)
    c_new = jax.nn.sigmoid(f + 1) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
    return jax.nn.sigmoid(o) * jnp.tanh(c_new), c_new


def objective(h_new, c_new):
    return jnp.sum(1.3 * h_new) + jnp.sum(0.7 * c_new)


def main():
    h_ref, c_ref = project_cell(W, b)

    # linen: φ → params
    cell = linen.LSTMCell(H, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(0), (jnp.zeros((n, H)),) * 2, jnp.zeros((n, n_in)))["params"]
    params = {name: dict(layer) for name, layer in params.items()}
    for gate, block in BLOCKS.items():
        params[f"i{gate}"]["kernel"] = W[:n_in, block]
        params[f"h{gate}"]["kernel"] = W[n_in:, block]
        params[f"h{gate}"]["bias"] = b[block] + (1.0 if gate == "f" else 0.0)
    (c_new, h_new), _ = cell.apply({"params": params}, (c, h), x)
    print(
        "linen forward: max error",
        float(jnp.max(abs(h_new - h_ref))),
        float(jnp.max(abs(c_new - c_ref))),
    )

    # linen: gradient → the vectors' layout
    grads = jax.grad(lambda p: objective(*reversed(cell.apply({"params": p}, (c, h), x)[0])))(
        params
    )
    dW, db = np.zeros_like(W), np.zeros_like(b)
    for gate, block in BLOCKS.items():
        dW[:n_in, block] = grads[f"i{gate}"]["kernel"]
        dW[n_in:, block] = grads[f"h{gate}"]["kernel"]
        db[block] = grads[f"h{gate}"]["bias"]
    dW_ref, db_ref = jax.grad(lambda Wb: objective(*project_cell(*Wb)))((W, b))
    print(
        "linen backward: max error",
        float(np.max(abs(dW - dW_ref))),
        float(np.max(abs(db - db_ref))),
    )

    # nnx: φ → the cell's layers (the forget kernel is `if_`)
    cell = nnx.LSTMCell(n_in, H, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    for gate, block in BLOCKS.items():
        getattr(cell, "if_" if gate == "f" else f"i{gate}").kernel.value = jnp.asarray(
            W[:n_in, block]
        )
        getattr(cell, f"h{gate}").kernel.value = jnp.asarray(W[n_in:, block])
        getattr(cell, f"h{gate}").bias.value = jnp.asarray(b[block] + (1.0 if gate == "f" else 0.0))
    (c_new, h_new), _ = cell((c, h), x)
    print(
        "nnx forward: max error",
        float(jnp.max(abs(h_new - h_ref))),
        float(jnp.max(abs(c_new - c_ref))),
    )


if __name__ == "__main__":
    main()
