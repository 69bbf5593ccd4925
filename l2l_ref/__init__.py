"""l2l-ref: a reference implementation of "Learning to learn by gradient descent by gradient
descent" (Andrychowicz et al., NIPS 2016), in NumPy with autograd.

The public API, what docs/walkthrough.md uses (arrays are host NumPy float64 unless a
`to_device` of a backend says otherwise):

    Problem, Instance, register_problem, Preset   a family of optimizees; one call makes it
                                                  known to the command line with its presets
    OptimizerConfig, ARCHITECTURES                the learned optimizer m (architectures/)
    init_phi, assign_networks                     a fresh φ, and which network serves each tensor
    TrainConfig, meta_train, run_optimizer        meta-training (Section 3), running a φ
    evaluate                                      the comparison with tuned baselines
    RunSpec, train, compare                       a whole run, as the command line makes it
    save_checkpoint, load_checkpoint              saved optimizers
    get_backend                                   numpy, or cupy on a GPU
    L2LError                                      what bad input raises

One module per idea of the paper:
    preprocessing  Appendix A's input map (and identity, and the released LogAndSign)
    architectures  m(∇, h; φ): the coordinatewise LSTM (Section 2.1), LSTM+GAC (appendix)
    optimizer      m applied to every tensor of θ (Eq. 1)
    unroll         θ_{t+1} = θ_t + g_t and the meta-loss of Eq. 3, truncated
    meta_train     Adam on φ over epochs of unrolls, early stopping (Section 3)
    problems       the optimizees: quadratic, simple, mnist (MLP), cifar (conv net)
    baselines      SGD, RMSprop, Adam, NAG and their learning-rate tuning
    comparison     the comparison on test problems (evaluate)
    search         the random search over the meta learning rate; report: claims over seeds
beside them, the fast versions checked against those definitions: fused (the first-order
meta-gradient by hand) and blocks (the cell's rows on the cores); and around them: run (a
run's settings and documents), presets (paper vs released code), folder (run folders, resume),
datasets, checkpoint, plot, vectors and verify (reference vectors for other implementations),
cli.
"""

from l2l_ref.backends import get_backend
from l2l_ref.checkpoint import load as load_checkpoint
from l2l_ref.checkpoint import save as save_checkpoint
from l2l_ref.comparison import evaluate
from l2l_ref.errors import L2LError
from l2l_ref.frozen import run_optimizer
from l2l_ref.meta_train import TrainConfig, meta_train
from l2l_ref.optimizer import ARCHITECTURES, OptimizerConfig, assign_networks, init_phi
from l2l_ref.presets import Preset
from l2l_ref.presets import register as register_problem
from l2l_ref.problems import Instance, Problem
from l2l_ref.run import RunSpec, compare, train

__all__ = [
    "ARCHITECTURES", "Instance", "L2LError", "OptimizerConfig", "Preset", "Problem", "RunSpec",
    "TrainConfig", "assign_networks", "compare", "evaluate", "get_backend", "init_phi",
    "load_checkpoint", "meta_train", "register_problem", "run_optimizer", "save_checkpoint",
    "train",
]  # fmt: skip
