"""The random streams of a seed: one seeded generator per purpose, so that a run's φ_0, its
training problems, its validation and test problems and a search's meta learning rates never
share a draw (docs/conventions.md, "Random streams and evaluation protocol")."""

import numpy as onp

# independent random streams derived from one seed
STREAMS = {"init": 0, "train": 1, "validation": 2, "test": 3, "search": 4}


def rng_for(seed: int, stream: str, trial: int = 0) -> onp.random.Generator:
    """The seeded generator of one stream; streams of one seed never share draws. A search's
    trials (l2l_ref.search) have their own init, train and search streams, `trial` 0 being
    the plain run of the seed; validation and test problems are the seed's, shared."""
    key = [STREAMS[stream], seed] + ([trial] if trial else [])
    return onp.random.default_rng(key)
