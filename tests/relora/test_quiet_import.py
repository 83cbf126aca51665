"""``import hf_pept`` prints nothing: registering with transformers and peft is silent, and so are the libraries
those imports pull in (peft imports bitsandbytes whenever it is installed)."""

import importlib.metadata
import subprocess
import sys

import pytest
from packaging.version import Version


def _bitsandbytes_version():
    try:
        return Version(importlib.metadata.version("bitsandbytes"))
    except importlib.metadata.PackageNotFoundError:
        return None


BNB = _bitsandbytes_version()


@pytest.mark.skipif(
    BNB is not None and BNB >= Version("0.49"),
    reason=f"bitsandbytes {BNB} logs a Hub-kernel line at import on some CPUs; pyproject's bnb extra bounds it <0.49",
)
def test_import_hf_pept_prints_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import hf_pept"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
