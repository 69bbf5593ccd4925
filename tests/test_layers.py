"""The package's layers, read from its source (issue 27): the optimizees never import the
optimizer, evaluation never imports training, the mathematics writes no files, and the checker
of other implementations does not need the generator of the vectors. The import graph is built
from every module's import statements (the package's __init__, which gathers the public API,
left out), and each rule holds for everything a module reaches through it."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {**{p: "l2l_ref" for p in (ROOT / "l2l_ref").rglob("*.py")}}
SOURCES |= {p: "l2l_ref.backends" for p in (ROOT / "backends").glob("*.py")}

OPTIMIZEES = {"l2l_ref.problems", "l2l_ref.datasets", "l2l_ref.activations"}
OPTIMIZER = {
    "l2l_ref.architectures", "l2l_ref.architectures.lstm", "l2l_ref.architectures.lstm_gac",
    "l2l_ref.optimizer", "l2l_ref.preprocessing", "l2l_ref.fused",
}  # fmt: skip
TRAINING = {"l2l_ref.meta_train"}
EVALUATION = {"l2l_ref.comparison", "l2l_ref.baselines", "l2l_ref.divergence", "l2l_ref.frozen"}
MATHEMATICS = OPTIMIZEES | OPTIMIZER | TRAINING | EVALUATION | {
    "l2l_ref.unroll", "l2l_ref.blocks", "l2l_ref.tree", "l2l_ref.streams",
}  # fmt: skip
WRITERS = {"l2l_ref.files", "l2l_ref.checkpoint", "l2l_ref.folder"}


def module_name(path: Path, package: str) -> str:
    base = ROOT / ("backends" if package.endswith("backends") else "l2l_ref")
    parts = path.relative_to(base).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((package, *parts))


def imports_of(path: Path) -> set[str]:
    """The l2l_ref modules a file imports (a `from l2l_ref import x` names the submodule x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("l2l_ref")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("l2l_ref"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p, pkg): p for p, pkg in SOURCES.items()}
    edges = {}
    for name, path in modules.items():
        if name == "l2l_ref":
            continue  # the public API's gathering place imports everything by design
        edges[name] = {m for m in imports_of(path) if m in modules and m != "l2l_ref"}
    return edges


def reached(start: str, edges: dict) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in edges.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


EDGES = graph()


def test_the_graph_knows_every_module_of_the_rules():
    for name in OPTIMIZEES | OPTIMIZER | TRAINING | EVALUATION | WRITERS | {"l2l_ref.verify"}:
        assert name in EDGES, name


def test_optimizees_never_import_the_optimizer_or_training():
    for name in OPTIMIZEES:
        assert not reached(name, EDGES) & (OPTIMIZER | TRAINING | EVALUATION), name


def test_evaluation_never_imports_training():
    for name in EVALUATION:
        assert not reached(name, EDGES) & TRAINING, (name, reached(name, EDGES) & TRAINING)


def test_the_mathematics_writes_no_files():
    """No module of the method reaches the writers, nor writes a file itself."""
    for name in MATHEMATICS:
        assert not reached(name, EDGES) & WRITERS, (name, reached(name, EDGES) & WRITERS)
    paths = {module_name(p, pkg): p for p, pkg in SOURCES.items()}
    for name in MATHEMATICS:
        tree = ast.parse(paths[name].read_text())
        calls = {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        assert not calls & {"write_text", "write_bytes", "savez", "save"}, name


def test_verify_does_not_need_the_vector_generator():
    assert "l2l_ref.vectors" not in reached("l2l_ref.verify", EDGES)


def test_the_error_type_loads_nothing_else():
    """`import l2l_ref.errors` (what a caller catching L2LError needs) loads no other module of the
    package, nor autograd: the public API in __init__ is loaded on first use."""
    code = (
        "import sys, l2l_ref.errors; "
        "print(sorted(m for m in sys.modules if m.startswith(('l2l_ref', 'autograd'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['l2l_ref',", "'l2l_ref.errors']"], out.stdout
