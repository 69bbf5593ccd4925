"""Where the time of a trial of the paper's protocol goes, and what a whole one would take.

Runs a short trial as `l2l-ref search` runs each of its trials (search.run_trial: meta-training
in the preset's precision, validation every --eval-every epochs, the training state saved after
every epoch), then the comparison of its optimizer with the tuned baselines on the test problems
(run.compare), with a clock on each part:

    meta-step          the LSTM's forward and backward passes and Adam on φ (what is left of
                       the unrolls once the parts below are taken out)
    optimizee          the optimizee's value and gradient (in training, validation, tests)
    minibatches        drawing and copying the images of a step
    validation         running the frozen φ on the validation problems (early stopping)
    state files        the training state written after every epoch
    baseline tuning    every baseline at every learning rate on the validation problems
    test comparison    the learned optimizer and the tuned baselines on the test problems

and projects the time of a full trial (the preset's epochs) and of the whole search of two
trials on two cores (trials side by side, then tuning and testing once). With --side-by-side
a second trial runs in another process at the same time, as the search's two workers do, and
the projection takes the slower of the two: trials side by side share the memory bus and the
cache, which a trial run alone does not show.

    python benchmarks/trial.py --problem mnist --data-dir DIR [--epochs 20] [--eval-every 10]
                               [--side-by-side]

One core unless L2L_REF_THREADS says otherwise, as a search's worker on a 2-core machine.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from functools import wraps

from meta_step import cpu_description

from l2l_ref import baselines, comparison, fused, presets, problems, run, search

meta_train = sys.modules["l2l_ref.meta_train"]  # the package's name is the function


class Clock:
    """Seconds by part, each part's own time: a part inside another is taken out of the outer
    one, and the optimizee's gradients and the minibatches are named by where they were
    needed ("validation › optimizee")."""

    INNER = ("optimizee", "minibatches")

    def __init__(self):
        self.own = defaultdict(float)
        self.stack = []

    @contextmanager
    def part(self, name: str):
        if name in self.INNER and self.stack:
            name = f"{self.stack[-1][0].split(' › ')[0]} › {name}"
        start, inner = time.perf_counter(), 0.0
        self.stack.append([name, 0.0])
        try:
            yield
        finally:
            _, inner = self.stack.pop()
            elapsed = time.perf_counter() - start
            self.own[name] += elapsed - inner
            if self.stack:
                self.stack[-1][1] += elapsed

    def wrap(self, module, attribute: str, name: str, returns_function: bool = False):
        """Time `module.attribute` as part `name` (or, with returns_function, the function it
        returns: value_and_grad(f) gives the function to time)."""
        original = getattr(module, attribute)

        def timed(function):
            @wraps(function)
            def call(*args, **kwargs):
                with self.part(name):
                    return function(*args, **kwargs)

            return call

        if returns_function:
            setattr(module, attribute, wraps(original)(lambda *a, **k: timed(original(*a, **k))))
        else:
            setattr(module, attribute, timed(original))


def instrument(clock: Clock) -> None:
    clock.wrap(meta_train, "train_epoch", "meta-step")
    clock.wrap(fused, "value_and_gradient", "optimizee", returns_function=True)
    clock.wrap(meta_train, "mean_final_loss", "validation")
    clock.wrap(search, "save_state", "state files")
    clock.wrap(comparison, "tune_learning_rate", "baseline tuning")
    clock.wrap(comparison, "run_on_each", "test comparison")
    clock.wrap(comparison, "run_baseline", "test comparison")
    clock.wrap(comparison, "draw_problems", "test comparison")
    # the baselines' gradients, and the minibatches
    clock.wrap(baselines, "value_and_gradient", "optimizee", returns_function=True)
    original = problems.minibatches

    def minibatches(*args, **kwargs):
        minibatch, data = original(*args, **kwargs)

        def timed(t):
            with clock.part("minibatches"):
                return minibatch(t)

        return timed, data

    problems.minibatches = minibatches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="mnist", choices=tuple(presets.PROBLEMS))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--test-problems", type=int, default=32)
    parser.add_argument(
        "--side-by-side", action="store_true",
        help="run a second trial in another process at the same time, as the search does",
    )  # fmt: skip
    parser.add_argument("--trial-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("L2L_REF_THREADS", "1")
    settings = {"data_dir": args.data_dir} if args.data_dir else {}
    full = run.RunSpec.from_preset(args.problem, args.preset, settings)
    spec = full.replace(epochs=args.epochs, eval_every=args.eval_every)
    spec = dataclasses.replace(spec, test_problems=args.test_problems)
    clock = Clock()
    instrument(clock)

    print(f"cpu: {cpu_description()}; L2L_REF_THREADS={os.environ['L2L_REF_THREADS']}")
    print(f"{spec.describe(spec.make_problem())}; {args.epochs} epochs, validation every "
          f"{args.eval_every} on {spec.train.validation_problems} problems")  # fmt: skip
    partner = start_partner(sys.argv[1:]) if args.side_by_side else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        outcome = search.run_trial(spec.as_dict(), folder)
    total = time.perf_counter() - start
    rates = [per_epoch_and_validation(clock, args)]
    if partner is not None:  # the partner's trial ran beside this one: its rates too
        printed, _ = partner.communicate()
        if partner.returncode != 0:
            raise SystemExit(f"the trial beside this one failed (exit {partner.returncode})")
        rates.append(tuple(map(float, printed.splitlines()[-1].split())))
    if args.trial_only:
        print(*rates[0])
        return 0
    start = time.perf_counter()  # tuning and testing once, alone, as the search does
    run.compare(spec, search.phi_of(outcome["phi"], spec), outcome["networks"])
    total += time.perf_counter() - start

    other = total - sum(clock.own.values())
    print(f"\n{'part':<32} {'seconds':>9} {'share':>7}")
    for name, seconds in sorted(clock.own.items(), key=lambda item: -item[1]):
        print(f"{name:<32} {seconds:>9.2f} {seconds / total:>7.1%}")
    print(f"{'other (problems, setup)':<32} {other:>9.2f} {other / total:>7.1%}")
    print(f"{'total':<32} {total:>9.2f}")

    # projection: the parts of an epoch scale with the epochs, validation with its count;
    # tuning and the test comparison are paid once per seed
    full_validations = full.train.epochs // full.train.eval_every + 1
    trials = [full.train.epochs * epoch + full_validations * val for epoch, val in rates]
    once = cost(clock, "baseline tuning") + cost(clock, "test comparison")
    beside = "with another trial beside it" if partner else "alone"
    for k, ((epoch, validation), trial) in enumerate(zip(rates, trials, strict=True)):
        name = "this trial" if k == 0 else "the trial beside it"
        print(f"\n{name}: per epoch {epoch:.3f} s, per validation {validation:.2f} s; projected "
              f"for {full.train.epochs} epochs and {full_validations} validations: "
              f"{trial / 60:.1f} min on one core {beside}")  # fmt: skip
    print(f"the 2-trial search on 2 cores: {(max(trials) + once) / 60:.1f} min (the trials side "
          f"by side{'' if partner else ', assumed not to slow each other'}, then tuning and "
          f"testing once, {once:.0f} s)")  # fmt: skip
    return 0


def cost(clock: Clock, prefix: str) -> float:
    """Seconds of part `prefix` and of the parts named inside it."""
    return sum(v for k, v in clock.own.items() if k.split(" › ")[0] == prefix)


def per_epoch_and_validation(clock: Clock, args) -> tuple[float, float]:
    """Seconds per epoch of meta-training (its meta-steps and state file) and per validation."""
    validations = args.epochs // args.eval_every + 1
    epoch = (cost(clock, "meta-step") + cost(clock, "state files")) / args.epochs
    return epoch, cost(clock, "validation") / validations


def start_partner(argv: list[str]) -> subprocess.Popen:
    """This benchmark's trial, alone, in another process: it prints its two rates."""
    argv = [a for a in argv if a != "--side-by-side"] + ["--trial-only"]
    # it inherits this process's environment, L2L_REF_THREADS included
    return subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)


if __name__ == "__main__":
    sys.exit(main())
