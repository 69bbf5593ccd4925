"""l2l-ref: a reference implementation of "Learning to learn by gradient descent by gradient
descent" (Andrychowicz et al., NIPS 2016), in NumPy with autograd.

The public API, what docs/walkthrough.md uses (arrays are host NumPy float64 unless a
`to_device` of a backend says otherwise):

    Problem, Instance, register_problem, Preset   a family of optimizees; one call makes it
                                                  known to the command line with its presets
    OptimizerConfig, ARCHITECTURES                the learned optimizer m (architectures/)
    LearnedOptimizer                              m for one optimizee, all but φ: the
                                                  configuration and the tensor → network map
    learned, optimize                             φ as an optimizer (init, step) of the
                                                  baselines' kind, and their one run loop
    init_phi, assign_networks                     a fresh φ, and which network serves each tensor
    TrainConfig, meta_train, run_optimizer        meta-training (Section 3), running a φ
    evaluate                                      the comparison with tuned baselines
    RunSpec, train, compare                       a whole run, as the command line makes it
    save_checkpoint, load_checkpoint              saved optimizers
    get_backend                                   numpy, or cupy on a GPU
    L2LError                                      what bad input raises

One module per idea of the paper:
    preprocessing  Appendix A's input map (and identity, and the released LogAndSign)
    architectures  m(∇, h; φ): the coordinatewise LSTM (Section 2.1), LSTM+GAC and NTM-BFGS
                   (appendix), each a frozen dataclass that owns its settings
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

import importlib
import sys
import types

# The public API is loaded on first use (PEP 562), so that `import l2l_ref.errors`, or any one
# module, does not load the whole package, autograd included.
_PUBLIC = {
    "get_backend": ("l2l_ref.backends", "get_backend"),
    "load_checkpoint": ("l2l_ref.checkpoint", "load"),
    "save_checkpoint": ("l2l_ref.checkpoint", "save"),
    "evaluate": ("l2l_ref.comparison", "evaluate"),
    "L2LError": ("l2l_ref.errors", "L2LError"),
    "learned": ("l2l_ref.frozen", "learned"),
    "optimize": ("l2l_ref.baselines", "optimize"),
    "run_optimizer": ("l2l_ref.frozen", "run_optimizer"),
    "TrainConfig": ("l2l_ref.meta_train", "TrainConfig"),
    "meta_train": ("l2l_ref.meta_train", "meta_train"),
    "ARCHITECTURES": ("l2l_ref.optimizer", "ARCHITECTURES"),
    "LearnedOptimizer": ("l2l_ref.optimizer", "LearnedOptimizer"),
    "OptimizerConfig": ("l2l_ref.optimizer", "OptimizerConfig"),
    "assign_networks": ("l2l_ref.optimizer", "assign_networks"),
    "init_phi": ("l2l_ref.optimizer", "init_phi"),
    "Preset": ("l2l_ref.presets", "Preset"),
    "register_problem": ("l2l_ref.presets", "register"),
    "Instance": ("l2l_ref.problems", "Instance"),
    "Problem": ("l2l_ref.problems", "Problem"),
    "RunSpec": ("l2l_ref.run", "RunSpec"),
    "compare": ("l2l_ref.run", "compare"),
    "train": ("l2l_ref.run", "train"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'l2l_ref' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """The import system binds each loaded submodule on its package; `meta_train` names both a
    submodule and the public function, and the public name is the function, as it was when this
    file imported everything."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return  # l2l_ref.meta_train stays the function; the module is sys.modules'
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
