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


def test_import_hf_pept_never_imports_gradio():
    import subprocess

    code = "import sys, hf_pept, hf_pept.app, hf_pept.app.backend; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "False"
