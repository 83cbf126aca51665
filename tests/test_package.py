import importlib
import subprocess
import sys

import hf_pept


def test_kernels_and_app_are_installed_inside_hf_pept_only(tmp_path):
    assert importlib.import_module("hf_pept.kernels").__name__ == "hf_pept.kernels"
    assert importlib.import_module("hf_pept.app").__name__ == "hf_pept.app"
    # From a folder outside the repo, the bare names must not resolve to our sources.
    for name in ("kernels", "app"):
        code = f"import importlib.util, sys; s = importlib.util.find_spec({name!r}); print(s.origin if s else None)"
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
        repo_root = str(importlib.import_module("hf_pept").__file__).rsplit("/hf_pept/", 1)[0]
        assert not out.stdout.strip().startswith(repo_root), out.stdout


def test_version():
    assert hf_pept.__version__.count(".") == 2
