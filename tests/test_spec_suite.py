"""The WebAssembly spec suite (../shared/wasm-spec) on codemem, debug on and off.

Runs scripts/spec_test.py as a user would; it exits non-zero on any failure not
justified in scripts/spec_skips.txt.  Text-format assert_malformed commands are
reported as skipped by the runner: they test the text parser, which is not ours.
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["--debug", "--no-debug"])
def test_spec_suite_passes(mode):
    out = subprocess.run(
        [sys.executable, "scripts/spec_test.py", "--engine", "codemem", mode, "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True,
    )
    total = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
    failures = [line for line in out.stdout.splitlines() if "failed 0" not in line]
    assert out.returncode == 0, f"{total}\n" + "\n".join(failures[:40])
    assert total.startswith("total: passed") and ", failed 0," in total, total
    passed = int(total.split("passed ")[1].split(",")[0])
    assert passed > 27000, total
