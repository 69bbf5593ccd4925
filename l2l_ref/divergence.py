"""When a run has diverged, and the scale on which runs are compared so that one that did
cannot dominate the comparison.

A run of an optimizer on a problem diverged when its final loss is not finite or more than
DIVERGENCE times its starting loss f(θ_0). Runs that stay at their starting loss (an
untrained or failed optimizer, a net at chance) or oscillate end within a small multiple of
f(θ_0); a blow-up grows geometrically, past 1e7 within 100 steps in the cases seen. The factor
10, an order of magnitude, lies far from both (docs/conventions.md, "Divergence").

The comparison's robust scale is the log of the final loss with a diverged run counted at the
divergence line, log(DIVERGENCE · f(θ_0)) (the paper plots log losses; the released code
reports log10 of the mean final loss): how far past the line a run went does not matter.
"""

import numpy as onp

DIVERGENCE = 10.0


def diverged(initial, final) -> onp.ndarray:
    """Per run: the final loss is not finite, or above DIVERGENCE × the initial loss."""
    initial, final = onp.asarray(initial, dtype=float), onp.asarray(final, dtype=float)
    with onp.errstate(invalid="ignore"):
        return ~onp.isfinite(final) | (final > DIVERGENCE * initial)


def log_final(initial, final) -> onp.ndarray:
    """Per run: log of the final loss, a diverged run's counted at log(DIVERGENCE × initial);
    a final loss of exactly 0 at the smallest positive float's log."""
    initial, final = onp.asarray(initial, dtype=float), onp.asarray(final, dtype=float)
    line = DIVERGENCE * initial
    capped = onp.where(diverged(initial, final), line, final)
    return onp.log(onp.maximum(capped, onp.finfo(float).tiny))
