"""`hf-pept app` options: local-only and no share link by default; a bad port is refused with a message."""

import sys

import pytest

from hf_pept.app import build_parser, main


def test_defaults_are_local_and_private():
    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.share is False and args.port == 7860
    assert build_parser().parse_args(["--share", "--port", "8000"]).share is True


def test_bad_port_is_refused_before_anything_starts():
    with pytest.raises(SystemExit, match="--port must be in 1..65535, got 70000"):
        main(["--port", "70000"])


APP_MODULES = (
    "hf_pept",
    "hf_pept.app",
    "hf_pept.app.backend",
    "hf_pept.app.schema",
    "hf_pept.app.runs",
    "hf_pept.app.charts",
    "hf_pept.app.memory_view",
    "hf_pept.app.gpu",
    "hf_pept.app.form",
)


def test_import_hf_pept_never_imports_gradio():
    import importlib

    if "gradio" not in sys.modules:  # cheap in-process check while nothing else has imported gradio
        for name in APP_MODULES:
            importlib.import_module(name)
        assert "gradio" not in sys.modules
        return
    import subprocess

    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {APP_MODULES!r}]; print('gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "False"
