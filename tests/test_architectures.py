"""The contract every registered optimizer architecture keeps (l2l_ref.architectures): a new
architecture is one module and one line in ARCHITECTURES, and these tests then hold it to the
same standard as the LSTM. Beside the registered ones they hold a second kind to it, a
coordinatewise MLP with no recurrent state (tests/coordinatewise_mlp.py, registered for these
tests alone), so that the contract cannot quietly assume the LSTM's state.

- φ has the declared shapes; the start state and one step have the right shapes and dtype;
- permuting the coordinates permutes the updates (the network is the same for every
  coordinate); a coordinatewise architecture's update of a coordinate depends on that
  coordinate alone, one that shares information (LSTM+GAC) depends on the others too;
- the meta-gradient, first and second order, against central differences of the meta-loss;
- the CPU stand-in of CuPy computes the same bits as NumPy;
- its memory estimate (memory_bytes) holds to the measured peak;
- checkpoints keep it; `--architecture` trains and evaluates it end to end.
"""

import dataclasses
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from l2l_ref import baselines, checkpoint, run
from l2l_ref.architectures import current_record, make, optimizer_name, registry_name
from l2l_ref.backends import numpy_backend
from l2l_ref.cli import flag, main
from l2l_ref.errors import ConfigError
from l2l_ref.frozen import learned
from l2l_ref.optimizer import (
    ARCHITECTURES,
    LearnedOptimizer,
    OptimizerConfig,
    init_network,
    is_shape,
    network_shapes,
    optimizer_step,
    start_hidden,
)
from l2l_ref.report import optimizer_label
from l2l_ref.run import RunSpec
from l2l_ref.tree import flatten, tree_map
from l2l_ref.unroll import meta_gradient, unroll
from tests import strict_array
from tests.coordinatewise_mlp import CoordinatewiseMLP
from tests.numpy_reference import coupled_quadratic
from tests.test_backends import agree
from tests.test_meta_gradient import assert_close_directional, directional_fd, inner

NAMES = [*sorted(ARCHITECTURES), "coordinatewise-mlp"]


@pytest.fixture(autouse=True)
def the_test_architecture(monkeypatch):
    """The MLP architecture registered while each test of this module runs."""
    monkeypatch.setitem(ARCHITECTURES, "coordinatewise-mlp", CoordinatewiseMLP)


def leaves(state) -> list:
    """The arrays of a state, whatever its structure (the LSTM's (h, c) per layer, none)."""
    return list(flatten(state).values()) if state not in ((), [], {}) else []


def config_for(architecture, own=None, **changes):
    """A small configuration of `architecture`; `own`: the architecture's settings, those of
    them it has."""
    settings = {"layers": (5, 4), "preprocessing": "appendix_a", "preprocessing_param": 10.0}
    declared = own_settings(architecture)
    own = {k: v for k, v in (own or {}).items() if k in declared}
    return OptimizerConfig(**{**settings, **changes}, architecture=make(architecture, own))


def own_settings(architecture) -> dict:
    """The architecture's own settings: {name: its field}."""
    return {f.name: f for f in dataclasses.fields(ARCHITECTURES[architecture])}


def two_tensors(rng, config):
    """φ, groups and a gradient and state for tensors of 6 and 3 coordinates, one network."""
    phi = {"all": init_network(rng, config)}
    grads = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}
    hidden = start_hidden(grads, config)
    hidden = tree_map(lambda x: x + 0.3 * rng.standard_normal(x.shape), hidden)
    return phi, dict.fromkeys(grads, "all"), grads, hidden


@pytest.mark.parametrize("architecture", NAMES)
def test_phi_state_and_step_have_the_declared_shapes(architecture):
    config = config_for(architecture)
    rng = np.random.default_rng(0)
    declared = flatten(network_shapes(config), is_leaf=is_shape)
    made = flatten(init_network(rng, config))
    assert declared.keys() == made.keys()
    assert all(made[k].shape == tuple(declared[k]) for k in declared)
    phi, groups, grads, hidden = two_tensors(rng, config)
    for name, state in start_hidden(grads, config).items():  # a row per coordinate, zero
        assert all(len(leaf) == np.size(grads[name]) and not leaf.any() for leaf in leaves(state))
    updates, new_hidden = optimizer_step(phi, grads, hidden, LearnedOptimizer(config, groups))
    for name in grads:
        assert updates[name].shape == np.shape(grads[name]) and updates[name].dtype == np.float64
        assert [x.shape for x in leaves(new_hidden[name])] == [
            x.shape for x in leaves(hidden[name])
        ]


@pytest.mark.parametrize("architecture", NAMES)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=690774)  # NTM-BFGS: a state entry 1e-6 of its array's scale, 2e-12 apart
def test_permuting_the_coordinates_permutes_the_updates(architecture, seed):
    config = config_for(architecture)
    rng = np.random.default_rng(seed)
    phi, groups, grads, hidden = two_tensors(rng, config)
    order = rng.permutation(6)
    permuted_grads = {"a": grads["a"].reshape(-1)[order].reshape(2, 3), "b": grads["b"]}
    permuted_hidden = {"a": tree_map(lambda x: x[order], hidden["a"]), "b": hidden["b"]}
    updates, states = optimizer_step(phi, grads, hidden, LearnedOptimizer(config, groups))
    moved, moved_states = optimizer_step(
        phi, permuted_grads, permuted_hidden, LearnedOptimizer(config, groups)
    )
    # the same up to rounding: sums over the coordinates (GAC's averages, the memory's reads)
    # add in another order, so an entry far below the array's scale may differ in its last bits
    close(moved["a"].reshape(-1), updates["a"].reshape(-1)[order])
    close(moved["b"], updates["b"])
    for leaf, moved_leaf in zip(leaves(states["a"]), leaves(moved_states["a"]), strict=True):
        close(moved_leaf, leaf[order])


def close(found, expected):
    """Equal to 1e-12 of each entry, or of the array's largest."""
    scale = np.abs(expected).max(initial=0.0)
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("architecture", NAMES)
def test_coordinates_share_information_exactly_when_the_architecture_says(architecture):
    """Change one coordinate's gradient: a coordinatewise architecture's other updates stay
    the same bits; LSTM+GAC's change, in both tensors, through its averages."""
    config = config_for(architecture)
    rng = np.random.default_rng(1)
    phi, groups, grads, hidden = two_tensors(rng, config)
    updates, _ = optimizer_step(phi, grads, hidden, LearnedOptimizer(config, groups))
    changed = {"a": grads["a"].copy(), "b": grads["b"]}
    changed["a"][0, 0] += 1.0
    others, _ = optimizer_step(phi, changed, hidden, LearnedOptimizer(config, groups))
    unchanged = np.array_equal(others["a"].reshape(-1)[1:], updates["a"].reshape(-1)[1:])
    unchanged = unchanged and np.array_equal(others["b"], updates["b"])
    assert unchanged == ARCHITECTURES[architecture].COORDINATEWISE
    assert others["a"][0, 0] != updates["a"][0, 0]


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shapes = {"a": (2, 2), "b": (3,)}
    problem = coupled_quadratic(rng, shapes)
    groups = {"a": "all", "b": draw(st.sampled_from(["all", "other"]))}
    T = draw(st.integers(1, 3))
    weights = tuple(draw(st.lists(st.floats(0.0, 2.0), min_size=T + 1, max_size=T + 1)))
    return rng, problem, groups, weights


@pytest.mark.parametrize("architecture", NAMES)
@pytest.mark.parametrize("second_order", [False, True])
@settings(max_examples=15, deadline=None)
@given(case=problems(), seed=st.integers(0, 2**32 - 1))
def test_meta_gradient_matches_central_differences(architecture, second_order, case, seed):
    """First order: the meta-loss with the optimizee's gradients frozen at the values the
    unroll fed the optimizer; second order: the meta-loss itself."""
    rng, problem, groups, weights = case
    config = config_for(architecture, {"gac_units": 1, "window": 2}, cell="plain", layers=(3, 2))
    phi = {g: init_network(rng, config) for g in sorted(set(groups.values()))}
    instance = problem.instance()
    hidden = start_hidden(instance.theta0, config)
    T, m = len(weights) - 1, LearnedOptimizer(config, groups)
    recorded = []
    unroll(phi, instance.theta0, hidden, instance, 0, T, m,
           on_step=lambda t, g, *rest: recorded.append(g))  # fmt: skip

    def meta_loss(phi):
        if second_order:
            losses, *_ = unroll(phi, instance.theta0, hidden, instance, 0, T, m, second_order=True)
        else:
            frozen = iter(recorded)
            losses = [instance.loss(instance.theta0, 0)]
            theta, state = instance.theta0, hidden
            for t in range(T):
                updates, state = optimizer_step(phi, next(frozen), state, m)
                theta = {k: theta[k] + updates[k] for k in theta}
                losses.append(instance.loss(theta, t + 1))
        return sum(w * float(f) for w, f in zip(weights, losses, strict=True))

    direction = tree_map(lambda p: np.random.default_rng(seed).standard_normal(p.shape), phi)
    fd = directional_fd(meta_loss, phi, direction)
    grad, *_ = meta_gradient(
        phi, instance.theta0, hidden, instance, 0, weights, m, second_order=second_order
    )
    assert_close_directional(inner(grad, direction), fd)


@pytest.mark.parametrize("architecture", NAMES)
@pytest.mark.parametrize("second_order", [False, True])
def test_the_stand_in_computes_the_same_bits(architecture, second_order):
    rng = np.random.default_rng(5)
    config = config_for(architecture, cell="plain" if second_order else "fused")
    problem = coupled_quadratic(rng, {"a": (2, 3), "b": (4,)})
    phi = {"all": init_network(rng, config)}
    case = phi, {"a": "all", "b": "all"}, problem, config, (0.0, 1.0, 0.5, 1.0)
    agree(strict_array, case, second_order, traced=False)
    agree(numpy_backend, case, second_order, traced=True)


@pytest.mark.parametrize("architecture", NAMES)
def test_the_learned_optimizer_is_an_optimizer_of_the_baselines_kind(architecture):
    """frozen.learned(φ) is an (init, step) pair like every baseline's: run by the baselines'
    loop it gives the losses of the unroll that meta-training differentiates (Eq. 1)."""
    rng = np.random.default_rng(6)
    config = config_for(architecture)
    problem = coupled_quadratic(rng, {"a": (2, 3), "b": (4,)}).instance()
    phi, groups = {"all": init_network(rng, config)}, {"a": "all", "b": "all"}
    optimizer = learned(phi, LearnedOptimizer(config, groups))
    by_loop = baselines.optimize(optimizer, None, problem, 12, np.asarray, traced=True)
    hidden = start_hidden(problem.theta0, config)
    losses, _, _ = unroll(
        phi, problem.theta0, hidden, problem, 0, 12, LearnedOptimizer(config, groups)
    )
    assert len(by_loop) == 13 and by_loop[-1] != by_loop[0]
    np.testing.assert_array_equal(by_loop, [float(x) for x in losses])


@pytest.mark.parametrize("architecture", NAMES)
def test_checkpoints_keep_the_architecture(architecture, tmp_path):
    """φ, the tensor → network map and the configuration, the architecture's own settings at
    values other than their defaults among them, come back from a checkpoint as saved."""
    config = config_for(architecture, {"gac_units": 3, "weight_gain": 0.5})
    assert config.architecture != config_for(architecture).architecture or (
        not own_settings(architecture)
    )
    phi = {"all": init_network(np.random.default_rng(2), config)}
    checkpoint.save(tmp_path / "c.npz", phi, {"x": "all"}, config, {})
    loaded, loaded_config, header = checkpoint.load(tmp_path / "c.npz")
    assert loaded_config == config and header["networks"] == {"x": "all"}
    flat, flat_loaded = flatten(phi), flatten(loaded)
    assert all(flat[k].tobytes() == flat_loaded[k].tobytes() for k in flat)


@pytest.mark.parametrize("architecture", NAMES)
def test_a_record_at_the_default_settings_reads_back(architecture):
    """The record of a configuration at its architecture's defaults (gac_units 2 among them,
    which records of earlier versions wrote for every architecture) gives that configuration
    back, and its label."""
    config = config_for(architecture)
    assert OptimizerConfig.from_record(config.record()) == config
    assert optimizer_label(current_record(config.record()))


def test_each_architecture_names_itself_in_reports():
    """Reports and figures name the learned optimizer as its architecture's `label` does:
    distinct names for distinct architectures of the same layers, each with the layer sizes."""
    labels = {name: optimizer_label(config_for(name).record()) for name in NAMES}
    assert len(set(labels.values())) == len(NAMES), labels
    assert all("5×4" in label for label in labels.values()), labels
    short = {name: optimizer_name(config_for(name).record()) for name in NAMES}
    assert len(set(short.values())) == len(NAMES), short


@pytest.mark.slow
@pytest.mark.parametrize("architecture", NAMES)
def test_train_and_evaluate_each_architecture(architecture, tmp_path, capsys):
    small = [
        "--epochs", "2", "--steps", "10", "--unroll", "5", "--layers", "4", "--eval-every", "1",
        "--validation-problems", "2", "--test-problems", "3", "--learning-rates", "0.1,1",
    ]  # fmt: skip
    own = other_values(architecture)  # each setting of its own, as a flag, not at its default
    flags = [f for name, value in own.items() for f in (flag(name), str(value))]
    out = tmp_path / "run"
    assert main(["train", *small, "--architecture", architecture, *flags, "--out", str(out)]) == 0
    _, config, _ = checkpoint.load(out / "checkpoint.npz")
    assert registry_name(config.architecture) == architecture
    assert config.architecture.settings() == own
    record = json.loads((out / "results.json").read_text())["optimizer"]
    assert {name: record[name] for name in own} == own
    capsys.readouterr()
    args = [
        "evaluate", str(out / "checkpoint.npz"), "--validation-problems", "2", "--test-problems",
        "3", "--learning-rates", "0.1,1", "--json", str(tmp_path / "e.json"),
    ]  # fmt: skip
    assert main(args) == 0
    again = json.loads((tmp_path / "e.json").read_text())["results"]
    before = json.loads((out / "results.json").read_text())["results"]
    assert again["learned"]["final_losses"] == before["learned"]["final_losses"]


def other_values(architecture) -> dict:
    """Each of the architecture's own settings at a value other than its default."""
    return {name: s.default + 1 if isinstance(s.default, int) else s.default / 2
            for name, s in own_settings(architecture).items()}  # fmt: skip


@pytest.mark.parametrize("architecture", NAMES)
def test_a_setting_of_another_architecture_is_refused_in_one_line(architecture, capsys):
    """Every architecture's setting is a flag of train and search; given with an architecture
    that lacks it, it is refused before any work (exit 2, one line naming its owner), and
    a bad value is refused by the architecture's own check."""
    own = own_settings(architecture)
    for other in NAMES:
        for name, value in other_values(other).items():
            if name in own:  # its own, or shared (NTM-BFGS has LSTM+GAC's gac_units)
                continue
            args = ["train", "--architecture", architecture, flag(name), str(value)]
            assert main(args) == 2
            message = capsys.readouterr().err.strip()
            assert "\n" not in message and f"{flag(name)} is a setting of" in message
            assert other in message and f"not of {architecture}" in message
    assert main(["train", "--architecture", "lstm-gac", "--gac-units", "0"]) == 2
    assert "LSTM+GAC setting gac_units needs 1 to" in capsys.readouterr().err


def test_a_setting_takes_its_defaults_type_and_the_architectures_check():
    """A setting's value has its default's type (a whole number for a float one, as a file may
    write it, is taken as a float; true is no number), and the architecture's check refuses
    what it must; every refusal names the architecture and the setting."""
    gain = config_for("coordinatewise-mlp", {"weight_gain": 2}).architecture
    assert gain.weight_gain == 2.0 and isinstance(gain.weight_gain, float)
    for own, message in [
        ({"weight_gain": True}, "weight_gain must be a finite number"),
        ({"weight_gain": -1.0}, "weight_gain: must be positive"),
    ]:
        with pytest.raises(ConfigError, match=f"coordinatewise MLP setting {message}"):
            config_for("coordinatewise-mlp", own)
    with pytest.raises(ConfigError, match=r"LSTM\+GAC setting gac_units must be an integer"):
        config_for("lstm-gac", {"gac_units": 2.0})
    with pytest.raises(ConfigError, match="architecture lstm has no setting gac_units"):
        OptimizerConfig.from_record({**OptimizerConfig().record(), "gac_units": 3})


def test_an_unknown_architecture_is_refused():
    record = {**config_for("lstm").record(), "architecture": "ntm-lbfgs"}
    with pytest.raises(ConfigError, match="unknown architecture 'ntm-lbfgs'"):
        OptimizerConfig.from_record(record)
    with pytest.raises(ConfigError, match="architecture must be a Architecture, not 'lstm'"):
        dataclasses.replace(config_for("lstm"), architecture="lstm")


@pytest.mark.parametrize("architecture", NAMES)
@pytest.mark.parametrize("second_order", [False, True])
def test_the_memory_estimate_follows_the_meta_gradient_path(architecture, second_order):
    """run.memory_estimate, which refuses runs too large for this machine, against the peak of
    NumPy's allocations while one epoch trains (tracemalloc): within a factor of 2.5 either way
    for every architecture and order, the hand-written path and autograd's tape alike, the
    same rule (the architecture's hand_written) choosing the path for training and for the
    estimate. Measured here: 0.48-0.66 of the estimate; on the MNIST MLP 0.91-1.36 (the plain
    cell the most)."""
    spec = RunSpec.from_preset(
        "quadratic", "paper", {"dims": 50, "batch": 40}, architecture=architecture, epochs=1,
        steps=20, unroll=20, eval_every=1, validation_problems=1, test_problems=2,
        second_order=second_order,
    )  # fmt: skip
    problem = spec.make_problem()
    estimate = run.memory_estimate(spec, problem)
    tracemalloc.start()
    try:
        run.train(spec, problem)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 1 / 2.5 <= peak / estimate <= 2.5, (peak / 2**20, estimate / 2**20)
