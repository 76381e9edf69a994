"""Under make test (HAZARDCTL_NO_SKIP=1) a skip is a failure unless it is a hardware skip in a test marked
for hardware: an inner pytest run with this project's conftest as its plugin, on tests written here."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

INNER = '''
import pytest
from tests.conftest import skip_for_hardware

def test_cuda_in_the_reason_is_no_pass():
    pytest.skip("needs CUDA")

@pytest.mark.needs_gpu
def test_marked_hardware_skip():
    skip_for_hardware("no CUDA device here")

@pytest.mark.needs_no_gpu
def test_marked_but_an_ordinary_skip():
    pytest.skip("the [ultralytics] extra is not installed")

def test_hardware_skip_without_the_marker():
    skip_for_hardware("no CUDA device here")

@pytest.mark.needs_gpu
def test_marked_and_runs():
    assert True
'''


def outcomes(tmp_path, no_skip: bool) -> dict[str, str]:
    """test name → passed / failed / skipped, from the inner run's JUnit XML."""
    import xml.etree.ElementTree as ET

    (tmp_path / "test_inner.py").write_text(INNER)
    xml = tmp_path / f"inner-{no_skip}.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HAZARDCTL_NO_SKIP": "1" if no_skip else "0"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
                        "--rootdir", str(tmp_path), f"--junitxml={xml}", str(tmp_path / "test_inner.py")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "skipped", "error"}
        found[case.get("name")] = {"failure": "failed", "skipped": "skipped", "error": "error"}.get(
            next(iter(kinds), ""), "passed")
    assert len(found) == 5, p.stdout[-3000:]
    return found


def test_only_a_marked_hardware_skip_passes_under_make_test(tmp_path):
    assert outcomes(tmp_path, no_skip=True) == {
        "test_cuda_in_the_reason_is_no_pass": "failed",
        "test_marked_hardware_skip": "skipped",
        "test_marked_but_an_ordinary_skip": "failed",
        "test_hardware_skip_without_the_marker": "failed",
        "test_marked_and_runs": "passed",
    }


def test_outside_make_test_skips_stay_skips(tmp_path):
    got = outcomes(tmp_path, no_skip=False)
    assert got["test_cuda_in_the_reason_is_no_pass"] == "skipped"
    assert got["test_marked_but_an_ordinary_skip"] == "skipped"
