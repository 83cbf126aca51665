"""Gradio app for hf-pept, installed as ``hf_pept.app``: configure a run, estimate its memory, launch it as an
``hf-pept train`` subprocess, watch its loss, perplexity and memory live.

``import hf_pept`` never imports this package; Gradio is imported only when the app starts.
"""

from __future__ import annotations

import argparse

INSTALL_HINT = "The app needs Gradio: pip install 'hf-pept[app]' (or: pip install gradio matplotlib)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-pept app",
        description="The Gradio app: configure a run, estimate its memory, launch it as an hf-pept train "
        "subprocess, watch its loss, perplexity and memory live.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default: only this machine).")
    parser.add_argument("--port", type=int, default=7860, help="Port of the web UI.")
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link (off by default).")
    parser.add_argument("--runs-dir", default="runs", help="Folder holding one sub-folder per run.")
    return parser


def create_app(runs_dir: str = "runs"):
    """The Gradio Blocks for the installed CLI, reading and writing runs under ``runs_dir``."""
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    from .backend import Backend
    from .schema import load_estimate, load_schema
    from .ui import CSS, build_ui

    schema = load_schema()
    return build_ui(Backend(schema, runs_dir, estimate=load_estimate(schema))), CSS


def main(argv: list[str] | None = None) -> int:
    """Entry of ``hf-pept app`` and ``python -m hf_pept.app``."""
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise SystemExit(f"--port must be in 1..65535, got {args.port}")
    try:
        demo, css = create_app(args.runs_dir)
    except ImportError as err:
        raise SystemExit(str(err)) from None
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, css=css, inbrowser=False)
    return 0
