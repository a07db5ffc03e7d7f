"""`pip install .` alone yields an importable codemem with its compiled extension."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_pip_install_builds_the_extension(tmp_path):
    target = tmp_path / "site"
    # No build isolation: the build requirements (setuptools, cffi) are those
    # of this venv, so the test needs no network beyond what bootstrap used.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    assert list((target / "codemem").glob("_native*.so")), "the cffi extension was not built"
    probe = (
        "import codemem, codemem.native as n;"
        "assert codemem.__file__.startswith(%r), codemem.__file__;"
        "print(n.REGFILE_SIZE, n.lib.cm_breakpoint_trampoline_address() != 0)" % str(target)
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", probe], check=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["424", "True"]
