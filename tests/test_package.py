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


def test_every_make_target_the_readme_names_exists_and_its_scripts_too():
    import re
    from pathlib import Path

    root = Path(hf_pept.__file__).resolve().parent.parent
    makefile = (root / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    named = set(re.findall(r"`make ([a-z][\w-]*)`", (root / "README.md").read_text()))
    assert {"demo", "test", "methods", "app", "examples"} <= named
    assert named <= targets, named - targets
    for script in re.findall(r"\$\(PY\) (examples/\S+\.py)", makefile):
        assert (root / script).is_file(), script
