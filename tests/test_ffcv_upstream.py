"""FFCV's own test suite (tests/ffcv_upstream/upstream/, FFCV's tests/ unchanged) passes against
fastdata with only its imports changed, but for the tests of FFCV's internals that
tests/ffcv_upstream/run.py leaves out (listed there and in the README)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("assertpy")
pytest.importorskip("webdataset")

RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ffcv_upstream", "run.py")


@pytest.mark.slow
def test_ffcvs_own_tests_pass_with_only_the_imports_changed():
    result = subprocess.run([sys.executable, RUN], capture_output=True, text=True, timeout=1800)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed," in result.stdout and "0 failed, 0 errors" in result.stdout, report
