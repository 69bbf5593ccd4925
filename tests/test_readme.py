"""The README's quick start stays what CI runs and what the command line accepts; its Python
example runs."""

import re
from pathlib import Path

import l2l_ref
from l2l_ref import cli, presets

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    install_and_run, install_and_test = re.findall(r"```sh\n(.+?)\n```", section("Quick start"))
    assert install_and_run.endswith("l2l-ref search")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


def test_main_job_described_in_the_readme_matches_the_code():
    args = cli.build_parser().parse_args(["search"])
    entry = presets.entry(args.problem, args.preset)
    training = presets.training_for(args.problem, args.preset)
    text = " ".join(section("Quick start").split())
    assert args.problem == "quadratic" and args.seeds == [0]
    assert {1: "one", 2: "two", 3: "three", 4: "four"}[args.trials] + " trials" in text
    assert f"each {training['epochs']:,} epochs of meta-training in {entry.train_dtype}" in text
    assert f"on {args.test_problems} fresh test problems" in text
    assert "runs/search-quadratic-paper-s0/" in text
    low, high = presets.search_range("quadratic", "paper")
    assert f"quadratic {low:g}–{high:g}" in " ".join(section("The command line").split())


def test_the_python_example_runs(monkeypatch):
    code = re.findall(r"```python\n(.+?)```", section("In Python"), re.DOTALL)[0]
    from_preset = l2l_ref.RunSpec.from_preset

    def small(*args, **options):
        options |= {"epochs": 2, "eval_every": 1, "validation_problems": 2}
        return from_preset(*args, **options, test_problems=2, learning_rates=(0.1, 1.0))

    monkeypatch.setattr(l2l_ref.RunSpec, "from_preset", staticmethod(small))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert set(namespace["results"]) == {"learned", "SGD", "RMSprop", "Adam", "NAG"}
