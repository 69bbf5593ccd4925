"""The public API (issue 16): `import l2l_ref` gives what a user needs, NumPy by default; a
problem family that breaks the contract is refused in one line naming the mistake; a problem
is registered in one place and is then known to runs and to the command line."""

import autograd.numpy as anp
import numpy as np
import pytest

import l2l_ref
from l2l_ref import presets
from l2l_ref.cli import main


def test_the_package_exports_its_api():
    for name in l2l_ref.__all__:
        assert hasattr(l2l_ref, name), name
    config = l2l_ref.OptimizerConfig(layers=(3,))
    problem = presets.problem_for("quadratic", "paper", {"batch": 4})
    result = l2l_ref.meta_train(  # no backend named: host NumPy, float64
        problem, config, l2l_ref.TrainConfig(epochs=1, steps=4, unroll=2, validation_problems=1)
    )
    assert all(v.dtype == np.float64 for v in result.phi["all"]["head"].values())


def family(mistake: str) -> l2l_ref.Problem:
    """A small family, with one of the natural mistakes."""

    def sample(rng, to_device, split="train"):
        w = to_device(rng.standard_normal(3))
        theta0 = {"w": w}
        if mistake == "θ as one array":
            theta0 = w
        if mistake == "integer θ":
            theta0 = {"w": np.arange(3)}
        if mistake == "loss without t":
            return l2l_ref.Instance(theta0, lambda theta: anp.sum(theta["w"] ** 2))
        return l2l_ref.Instance(theta0, lambda theta, t: anp.sum(theta["w"] ** 2))

    if mistake == "sample without the split":
        return l2l_ref.Problem("mine", {}, lambda rng, to_device: sample(rng, to_device))
    if mistake == "sample returns a dict":
        return l2l_ref.Problem("mine", {}, lambda rng, to_device, split: {"w": 1.0})
    return l2l_ref.Problem("mine", {}, sample)


MISTAKES = {
    "sample without the split": "sample must take (rng, to_device, split)",
    "sample returns a dict": "sample returned dict, not an Instance",
    "loss without t": "loss must take (theta, t)",
    "θ as one array": "θ_0 must be a dict of named arrays",
    "integer θ": "θ_0['w'] must be a float array",
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_broken_problem_contract_is_one_line(mistake):
    config, train = (
        l2l_ref.OptimizerConfig(layers=(2,)),
        l2l_ref.TrainConfig(epochs=1, steps=2, unroll=1),
    )
    with pytest.raises(l2l_ref.L2LError) as error:
        l2l_ref.meta_train(family(mistake), config, train)
    message = str(error.value)
    assert message.startswith("problem mine: ") and MISTAKES[mistake] in message
    assert "\n" not in message
    with pytest.raises(l2l_ref.L2LError, match="problem mine"):
        l2l_ref.evaluate(family(mistake), {}, {}, config, steps=2, test_problems=2)


def test_one_registration_makes_a_problem_known(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(presets, "PROBLEMS", dict(presets.PROBLEMS))
    l2l_ref.register_problem(
        "mine", lambda: family("none"), paper=l2l_ref.Preset(training={"meta_lr": 0.05})
    )
    spec = l2l_ref.RunSpec.from_preset("mine", epochs=1, steps=4, unroll=2)
    assert spec.train.meta_lr == 0.05 and spec.optimizer == l2l_ref.OptimizerConfig()
    args = ["train", "--problem", "mine", "--epochs", "1", "--steps", "4", "--unroll", "2",
            "--layers", "2", "--validation-problems", "1", "--test-problems", "2",
            "--learning-rates", "0.1", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    assert "mine, preset paper" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "other"), "--preset", "deepmind"]) == 2
    assert "problem mine has no preset 'deepmind'" in capsys.readouterr().err


def family_without_a_default_split() -> l2l_ref.Problem:
    """A family whose sample takes the split with no default (the contract names it)."""

    def sample(rng, to_device, split):
        theta0 = {"w": to_device(rng.standard_normal(3))}
        return l2l_ref.Instance(theta0, lambda theta, t: anp.sum(theta["w"] ** 2))

    return l2l_ref.Problem("no-default-split", {}, sample)


def test_a_sample_without_a_default_split_trains():
    """meta_train and the memory estimate pass the split by name (they called sample with two
    arguments, a bare TypeError)."""
    config = l2l_ref.OptimizerConfig(layers=(2,))
    train = l2l_ref.TrainConfig(epochs=1, steps=2, unroll=1, validation_problems=1)
    l2l_ref.meta_train(family_without_a_default_split(), config, train)


def test_a_preset_with_an_unknown_training_setting_is_one_line():
    with pytest.raises(l2l_ref.L2LError, match=r"Preset\(training=\.\.\.\) has no 'epoch'"):
        l2l_ref.Preset(training={"epoch": 3})


def test_a_problem_registered_in_the_parent_reaches_the_search_workers(tmp_path, monkeypatch):
    """A script that registers its problem under `if __name__ == "__main__":` (here: this
    process only) searches on worker processes that never ran that code."""
    from l2l_ref import search
    from l2l_ref.run import RunSpec

    monkeypatch.setattr(presets, "PROBLEMS", dict(presets.PROBLEMS))
    l2l_ref.register_problem("no-default-split", family_without_a_default_split)
    search.reachable_by_workers("no-default-split")
    base = RunSpec.from_preset(
        "no-default-split", layers=(2,), epochs=1, steps=2, unroll=1, eval_every=1,
        validation_problems=1, test_problems=2, learning_rates=(0.1,),
    )  # fmt: skip
    plan = search.Search(base, [0], 1, (0.01, 0.02), tmp_path)
    search.run_trials(plan, lambda: search.local_pool(1), type("Bar", (), {"update": print})())
    assert plan.record["trials"]["seed-0/trial-0"]["status"] == "done", plan.record["trials"]
    l2l_ref.register_problem("made-in-place", lambda: family_without_a_default_split())
    with pytest.raises(l2l_ref.L2LError, match="cannot be sent to the search's worker"):
        search.reachable_by_workers("made-in-place")


def test_an_architecture_of_ones_own_is_named_by_its_name():
    from l2l_ref.report import optimizer_label

    assert optimizer_label({"layers": [3], "architecture": "mlp-opt"}) == "mlp-opt 3"
    assert optimizer_label({"layers": [20, 20], "architecture": "lstm"}) == "LSTM 20×20"
    assert main(["train", "--gac-units", "999", "--epochs", "1"]) == 2
