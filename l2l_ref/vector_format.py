"""What a folder of reference vectors is, for the tools that read it (verify) without the
generator that computes it (vectors): the format's name and version, the tolerances, where the
installed vectors lie, and each baseline's fixed settings and the parts of its state.
"""

from importlib.resources import files
from pathlib import Path

FORMAT = "l2l-ref-vectors"
# 3: the cases conv-ties (max pooling's ties) and mlp-gac-networks (GAC with two networks);
# corrected claims (docs/vectors.md, "Versions")
VERSION = 4
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}  # Torch7 adam, ε added to sqrt(v)
# verify's tolerance per stage and step: abs ≤ atol + rtol · max|expected|
TOLERANCE = {"float64": {"rtol": 1e-6, "atol": 1e-12}, "float32": {"rtol": 1e-3, "atol": 1e-12}}
# the committed vectors, shipped inside the package
DEFAULT_FOLDER = Path(str(files("l2l_ref") / "reference_vectors"))


# each baseline's fixed hyper-parameters (baselines.py's defaults) and the names of the parts of
# its state the vectors record
BASELINE_HYPER = {
    "SGD": {},
    "RMSprop": {"alpha": 0.99, "eps": 1e-8},
    "Adam": ADAM,
    "NAG": {"momentum": 0.9},
}
BASELINE_STATES = {"SGD": (), "RMSprop": ("mean_square",), "Adam": ("m", "v"), "NAG": ("velocity",)}
