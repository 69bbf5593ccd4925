"""Does meta-training on the MNIST MLP leave chance? Trials of the `mnist` paper preset and of
variants of it, on development seeds, as `l2l-ref search` runs them (each seed's trial 0: its
meta learning rate drawn from the preset's range, its own φ_0 and training problems), with the
validation loss every --eval-every epochs. The variants of one seed share the rate, φ_0's LSTM
layers and every problem: their differences are paired.

    python scripts/mnist_trap.py --data-dir DIR --seeds 100-105 --variants paper,zero-head \\
        --epochs 100 --out trap.jsonl [--workers 2]

A trial left chance when its best validation loss is below 1.0 (chance is ln 10 = 2.303).
One JSON line per trial is appended to --out as it finishes; trials already there are skipped.

    python scripts/mnist_trap.py --summary FILE.jsonl...

prints, per file and variant, how many trials left chance and when, and

    python scripts/mnist_trap.py --data-dir DIR --trace SEED VARIANT [--epochs 6]

follows one trial epoch by epoch (in float64): what its optimizer does on the seed's first
validation problem (scripts/mnist_diagnosis.py's measures: the loss after 99 steps, the RMS
update, its cosine with −∇ and the share of it that is each tensor's mean).
"""

import argparse
import dataclasses
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as onp

VARIANTS = {
    "paper": {},
    "zero-head": {"init": "zero-head"},
    "scale-0.01": {"output_scale": 0.01},
    "zero-head-scale-0.01": {"init": "zero-head", "output_scale": 0.01},
}
LEFT_CHANCE = 1.0


def seeds(text: str) -> list[int]:
    """'100-105' or '100,103'."""
    if "-" in text:
        low, high = map(int, text.split("-"))
        return list(range(low, high + 1))
    return [int(part) for part in text.split(",")]


def trial(job: dict) -> dict:
    from l2l_ref import presets, run
    from l2l_ref.machine import machine
    from l2l_ref.search import draw_trials

    seed, variant = job["seed"], job["variant"]
    (plan,) = draw_trials([seed], 1, *presets.search_range("mnist", "paper"))
    spec = run.RunSpec.from_preset(
        "mnist", "paper", {"data_dir": job["data_dir"]}, meta_lr=plan.meta_lr, seed=seed,
        epochs=job["epochs"], eval_every=job["eval_every"],
    )  # fmt: skip
    spec = dataclasses.replace(
        spec, optimizer=dataclasses.replace(spec.optimizer, **VARIANTS[variant])
    )
    start = time.perf_counter()
    result = run.train(spec)
    return {
        "seed": seed, "variant": variant, "meta_lr": plan.meta_lr, "epochs": job["epochs"],
        "validation": result.validation, "best_validation": result.best_validation,
        "left_chance": result.best_validation < LEFT_CHANCE,
        "meta_losses": result.meta_losses, "seconds": time.perf_counter() - start,
        "machine": machine(),
    }  # fmt: skip


def trace_trial(data_dir: str, seed: int, variant: str, epochs: int) -> None:
    from mnist_diagnosis import trace

    from l2l_ref import presets, run
    from l2l_ref.optimizer import LearnedOptimizer, optimizer_step, start_hidden
    from l2l_ref.problems import checked_sample
    from l2l_ref.search import draw_trials
    from l2l_ref.streams import rng_for

    (plan,) = draw_trials([seed], 1, *presets.search_range("mnist", "paper"))
    spec = run.RunSpec.from_preset(
        "mnist", "paper", {"data_dir": data_dir}, meta_lr=plan.meta_lr, seed=seed,
        epochs=epochs, eval_every=epochs, train_dtype="float64",
    )  # fmt: skip
    config = dataclasses.replace(spec.optimizer, **VARIANTS[variant])
    spec = dataclasses.replace(spec, optimizer=config)
    problem = spec.make_problem()
    host = lambda a: onp.array(a, dtype=onp.float64)  # noqa: E731
    instance = checked_sample(problem, rng_for(seed, "validation"), host, "validation")
    print(f"seed {seed}, {variant}, meta lr {plan.meta_lr:.4f}, {data_dir}")

    def show(state):
        def update(g, hidden, theta):
            hidden = hidden if hidden is not None else start_hidden(theta, config)
            m = LearnedOptimizer(config, state.result.networks)
            return optimizer_step(state.phi, g, hidden, m)

        rows = trace(update, instance, 100)[5:]
        moved = rows[:, 2] > 0
        share = onp.mean(rows[moved, 4] / rows[moved, 2]) if moved.any() else onp.nan
        print(f"epoch {state.epoch}: loss after 99 steps {rows[-1, 0]:.3f}, RMS update "
              f"{rows[:, 2].mean():.1e}, cos(g, −∇) {onp.nan_to_num(rows[:, 3]).mean():+.3f}, "
              f"per-tensor mean's share {share:.2f}", flush=True)  # fmt: skip

    run.train(spec, problem, on_state=show)


def summary(paths: list[Path]) -> None:
    """Per file and variant: trials that left chance, the epoch each first validated below
    1.0 (— where none did), and the best validation losses."""
    for path in paths:
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        for variant in dict.fromkeys(e["variant"] for e in entries):
            mine = sorted((e for e in entries if e["variant"] == variant), key=lambda e: e["seed"])
            left = sum(e["left_chance"] for e in mine)
            first = [
                next((str(at) for at, v in e["validation"] if v < LEFT_CHANCE), "—") for e in mine
            ]
            best = ", ".join(f"{e['best_validation']:.2f}" for e in mine)
            seeds = f"{mine[0]['seed']}-{mine[-1]['seed']}"
            print(f"{path.name}, {variant}, seeds {seeds}: {left} of {len(mine)} left chance; "
                  f"first below 1.0 at epoch {', '.join(first)}; best {best}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, nargs="+")
    parser.add_argument("--trace", nargs=2, metavar=("SEED", "VARIANT"))
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", type=seeds, default=seeds("100-105"))
    parser.add_argument("--variants", default="paper,zero-head")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.summary:
        return summary(args.summary)
    if args.trace:
        return trace_trial(args.data_dir, int(args.trace[0]), args.trace[1], args.epochs)
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            entry = json.loads(line)
            done.add((entry["seed"], entry["variant"], entry["epochs"]))
    jobs = [
        {"seed": s, "variant": v, "epochs": args.epochs, "eval_every": args.eval_every,
         "data_dir": str(Path(args.data_dir).resolve())}
        for s in args.seeds for v in args.variants.split(",")
        if (s, v, args.epochs) not in done
    ]  # fmt: skip
    os.environ["L2L_REF_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for entry in pool.imap_unordered(trial, jobs):
            with args.out.open("a") as out:
                out.write(json.dumps(entry) + "\n")
            curve = ", ".join(f"{v:.3f}" for _, v in entry["validation"])
            print(f"seed {entry['seed']} {entry['variant']:<10} lr {entry['meta_lr']:.4f}: "
                  f"{curve} ({entry['seconds']:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
