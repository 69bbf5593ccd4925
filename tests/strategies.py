"""Hypothesis strategies for small configurations of the optimizer and its optimizee."""

import dataclasses

import numpy as np
from hypothesis import strategies as st

from l2l_ref.optimizer import ARCHITECTURES, OptimizerConfig, init_network
from tests.numpy_reference import coupled_quadratic

PREPROCESSING = st.sampled_from(
    [("identity", 0.0), ("appendix_a", 10.0), ("appendix_a", 3.0), ("log_and_sign", 5.0)]
)


# the architectures tests/numpy_reference.py implements a second time
REFERENCE_ARCHITECTURES = ("lstm", "lstm-gac")


@st.composite
def setups(draw, max_unroll: int = 4, architectures=tuple(ARCHITECTURES)):
    """(φ, groups, problem, OptimizerConfig, weights w_0..w_T) for a random small case, of
    any registered architecture (or those given)."""
    layers = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    name, param = draw(PREPROCESSING)
    scale = draw(st.sampled_from([1.0, 0.1]))
    cell = draw(st.sampled_from(["plain", "fused"]))
    architecture = draw(st.sampled_from(architectures))
    declared = {f.name for f in dataclasses.fields(ARCHITECTURES[architecture])}
    own = {"gac_units": draw(st.integers(1, min(layers, default=1)))}
    if "window" in declared:  # NTM-BFGS: windows shorter than the run, so that writes drop out
        own["window"] = draw(st.integers(1, 3))
    own = {k: v for k, v in own.items() if k in declared}
    config = OptimizerConfig(
        layers, name, param, scale, cell=cell, architecture=ARCHITECTURES[architecture](**own)
    )
    n_tensors = draw(st.integers(1, 3))
    shapes = {
        f"t{k}": tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
        for k in range(n_tensors)
    }
    shared = draw(st.booleans())
    groups = {k: "all" if shared else f"net{n % 2}" for n, k in enumerate(shapes)}
    T = draw(st.integers(1, max_unroll))
    weights = tuple(draw(st.lists(st.floats(0.0, 2.0), min_size=T + 1, max_size=T + 1)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    problem = coupled_quadratic(rng, shapes)
    phi = {g: init_network(rng, config) for g in sorted(set(groups.values()))}
    return phi, groups, problem, config, weights
