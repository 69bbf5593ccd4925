"""docs/walkthrough.md cannot go stale (issue 7): every code block on it is run here.

- A python block whose first line is a comment naming a file (`# l2l_ref/unroll.py`) quotes
  the source: its other lines must appear, word for word and in one piece, in that file.
- Every other python block runs, in order, in one namespace, in a scratch folder; a text block
  right after it must be what it printed: the same words, and numbers within 1%. The page
  shows only what any correct machine prints: numbers of meta-trained optimizers where they
  were measured not to move (the same digits under OpenBLAS's Haswell, SkylakeX and
  Sandybridge kernels and with φ_0 perturbed by 1e-15), else a property with a margin.
- Every line of a sh block runs in the same scratch folder and must succeed. `l2l-ref train`
  and `evaluate` get small sizes appended (SMALL); `l2l-ref verify` gets a candidate written
  by the autograd-free second implementation (tests/vectors_candidate.py).
- The figures the page shows are the ones its commands write, and are committed.
"""

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from l2l_ref import presets
from l2l_ref.architectures import ARCHITECTURES
from tests.vectors_candidate import write_candidate

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "walkthrough.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
QUOTE = re.compile(r"# ((?:l2l_ref|backends)/[\w/]+\.py)\n")
SMALL = {
    "train": ["--epochs", "2", "--eval-every", "1", "--validation-problems", "2"],
    "search": ["--epochs", "2", "--eval-every", "1", "--validation-problems", "2"],
    "evaluate": ["--validation-problems", "2"],
}
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def same_up_to_rounding(printed: str, shown: str) -> bool:
    """The same text, the numbers in it within 1% of each other."""
    if NUMBER.sub("#", printed) != NUMBER.sub("#", shown):
        return False
    pairs = zip(NUMBER.findall(printed), NUMBER.findall(shown), strict=True)
    return all(
        abs(float(a) - float(b)) <= 0.01 * max(abs(float(a)), abs(float(b))) for a, b in pairs
    )


SMALL_COMPARISON = ["--test-problems", "2", "--learning-rates", "0.1,1"]


def blocks() -> list[tuple[str, str]]:
    return FENCE.findall(PAGE.read_text())


def test_quoted_source_is_the_source():
    quotes = [(QUOTE.match(code), code) for lang, code in blocks() if lang == "python"]
    quotes = [(match, code) for match, code in quotes if match]
    assert len(quotes) >= 8
    for match, code in quotes:
        source = (ROOT / match.group(1)).read_text()
        assert code[match.end() :] in source, f"not in {match.group(1)}:\n{code}"


def command(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "l2l-ref", line
    small = SMALL.get(words[1], []) + (SMALL_COMPARISON if words[1] in SMALL else [])
    return [sys.executable, "-m", "l2l_ref.cli", *words[1:], *small]


@pytest.fixture
def registries_restored(monkeypatch):
    """The registries as they were once the test is over: the page registers a problem and
    an architecture."""
    monkeypatch.setattr(presets, "PROBLEMS", dict(presets.PROBLEMS))
    architectures = dict(ARCHITECTURES)
    yield
    ARCHITECTURES.clear()
    ARCHITECTURES.update(architectures)


def run_blocks(page_blocks: list, where: str) -> dict:
    """Run `page_blocks` as the page's rules say (the module's docstring), in one namespace;
    how many blocks of each kind ran."""
    namespace: dict = {}
    printed = None  # what the last python block printed, until a text block claims it
    ran = {"python": 0, "sh": 0, "text": 0}
    for number, (lang, code) in enumerate(page_blocks):
        here = f"block {number} of {where}"
        if lang == "python" and QUOTE.match(code):
            continue
        if lang == "python":
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                exec(compile(code, here, "exec"), namespace)
            printed = output.getvalue()
        elif lang == "text":
            assert printed is not None, f"{here}: a text block that follows no python block"
            assert same_up_to_rounding(printed, code), (
                f"{here}: the page shows\n{code}\nthe code printed\n{printed}"
            )
            printed = None
        elif lang == "sh":
            for line in filter(None, code.splitlines()):
                result = subprocess.run(command(line), capture_output=True, text=True)
                assert result.returncode == 0, f"{here}: {line}\n{result.stderr[-2000:]}"
        else:
            raise AssertionError(f"{here}: no rule to run a {lang} block")
        ran[lang] += 1
    return ran


@pytest.mark.slow
def test_every_block_runs_and_prints_what_the_page_shows(
    tmp_path, monkeypatch, registries_restored
):
    monkeypatch.chdir(tmp_path)
    write_candidate(ROOT / "l2l_ref" / "reference_vectors", tmp_path / "my-candidate")
    ran = run_blocks(blocks(), PAGE.name)
    assert ran["python"] >= 5 and ran["text"] >= 4 and ran["sh"] >= 4, ran


@pytest.mark.slow
@pytest.mark.parametrize("title", ["10. A problem of your own", "11. An architecture of your own"])
def test_the_sections_on_your_own_run_on_their_own(
    title, tmp_path, monkeypatch, registries_restored
):
    """The sections that show how to add a problem and an architecture are whole programs: each
    runs, and prints what the page shows, with nothing from the sections before it."""
    monkeypatch.chdir(tmp_path)
    text = PAGE.read_text()
    start = text.index(f"## {title}")
    end = text.index("\n## ", start + 1)
    ran = run_blocks(FENCE.findall(text[start:end]), f"section {title}")
    assert ran["python"] >= 2 and ran["text"] >= 1, ran


def test_figures_shown_are_drawn_by_the_page_and_committed():
    text = PAGE.read_text()
    figures = re.findall(r"!\[[^\]]*\]\((figures/[\w.-]+\.png)\)", text)
    assert figures
    commands = " ".join(code for lang, code in blocks() if lang == "sh")
    for figure in figures:
        assert (ROOT / "docs" / figure).is_file(), figure
        assert f"-o docs/{figure}" in commands, f"no command on the page draws {figure}"


def test_readme_links_the_guides_and_says_what_is_not_reproduced():
    readme = (ROOT / "README.md").read_text()
    for page in ("walkthrough", "results", "verifying", "performance"):
        assert f"(docs/{page}.md)" in readme, page
    assert "does not" in readme.lower()
