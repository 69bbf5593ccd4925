"""Run autograd's own test suite with and without this project's device-safe rules.

The rules in backends/autograd_device.py replace gradient rules for every array type, NumPy's
included; autograd's suite passing unchanged with them installed shows them harmless to NumPy.
Downloads the autograd source release matching the installed version from the package index
(or takes --sdist), runs its tests/ twice and prints both summaries:

    python scripts/autograd_suite.py [--sdist autograd-1.9.1.tar.gz]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL = """
import autograd.numpy.numpy_wrapper
from l2l_ref.backends import autograd_device
autograd_device.install()
assert autograd.numpy.numpy_wrapper.concatenate_args is autograd_device.concatenate_args
"""


def fetch_sdist(folder: Path) -> Path:
    download = ["download", "--no-deps", "--no-binary", ":all:", "-d", str(folder)]
    subprocess.run(
        [sys.executable, "-m", "pip", *download, f"autograd=={version('autograd')}"],
        check=True,
        capture_output=True,
    )
    return next(folder.glob("autograd-*.tar.gz"))


def run_suite(tests: Path, replaced: bool) -> str:
    conftest = tests / "conftest.py"
    original = conftest.read_text()
    conftest.write_text((INSTALL if replaced else "") + original)
    try:
        # -c: not autograd's pytest configuration, which requires plugins it needs for CI
        options = ["-q", "-p", "no:cacheprovider", "-c", os.devnull, "-W", "ignore"]
        result = subprocess.run(
            [sys.executable, "-m", "pytest", str(tests), *options, "--rootdir", str(tests.parent)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        conftest.write_text(original)
    return result.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="autograd source release (.tar.gz)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sdist = args.sdist or fetch_sdist(scratch)
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        tests = scratch / "suite" / "tests"
        shutil.copytree(next(scratch.glob("autograd-*/tests")), tests)
        print(f"autograd {version('autograd')}, numpy {version('numpy')}, suite from {sdist.name}")
        for replaced in (False, True):
            rules = "with the device-safe rules" if replaced else "autograd's own rules    "
            print(f"  {rules}: {run_suite(tests, replaced)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
