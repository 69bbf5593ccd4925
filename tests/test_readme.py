"""The README's quick start stays what CI runs and what the command line accepts."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    install_and_train, install_and_test = quick_start_commands()
    assert install_and_train.endswith("l2l-ref train")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


def test_default_run_described_in_the_readme_matches_the_code():
    from l2l_ref.cli import DEFAULT_EPOCHS, DEFAULT_TEST_PROBLEMS

    readme = (ROOT / "README.md").read_text()
    assert f"for {DEFAULT_EPOCHS} epochs" in readme
    assert f"on {DEFAULT_TEST_PROBLEMS} fresh test problems" in readme
