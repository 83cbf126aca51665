"""``hf-pept``: the command line.

hf-pept train    --method galore --model 60m ...   one pre-training run as a folder (options: hf-pept train -h)
hf-pept compare  [--budget 2] [--seeds 2]            every method of the method table: same budget, data, seeds
hf-pept estimate --method galore --model 1b ...    memory estimate per component, no training
hf-pept methods  [NAME ...]                        every method: family, paper, stock entry point, knobs
hf-pept app                                        the Gradio app (needs `pip install hf-pept[app]`)
"""

from __future__ import annotations

import signal
import sys

from .runner import TrainingFailed, train

COMMANDS = ("train", "compare", "estimate", "methods", "app")
USAGE = __doc__


def _train(argv: list[str]) -> int:
    from .run_args import parse_train_args

    summary = train(*parse_train_args(argv))
    if summary.get("signal"):  # preempted, after a clean checkpoint: exit as the signal would (SIGTERM: 143)
        return 128 + signal.Signals[summary["signal"]].value
    return 0


def _compare(argv: list[str]) -> int:
    from .compare import main as compare_main

    return compare_main(argv)


def _estimate(argv: list[str]) -> int:
    from .memory import main as estimate_main

    return estimate_main(argv)


def _methods(argv: list[str]) -> int:
    import argparse

    from . import methods

    parser = argparse.ArgumentParser(
        prog="hf-pept methods", description="Every training method: family, paper, stock entry point and knobs."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"Only these ({', '.join(methods.METHODS)}).")
    args = parser.parse_args(argv)
    print(methods.format_table(args.names))
    return 0


def _app(argv: list[str]) -> int:
    try:
        from hf_pept.app import main as app_main
    except ImportError as err:
        print(
            f"hf-pept app is not available ({err}). Install the app's extras: pip install 'hf-pept[app]'",
            file=sys.stderr,
        )
        return 1
    result = app_main(argv)
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hf-pept`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handlers = {"train": _train, "compare": _compare, "estimate": _estimate, "methods": _methods, "app": _app}
    if command not in handlers:
        print(f"hf-pept: unknown command {command!r}; choose one of {', '.join(COMMANDS)}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return handlers[command](rest)
    except SystemExit as exit_:  # argparse: --help (0) or a bad option (2, its one-line message already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    except TrainingFailed as err:
        print(f"hf-pept {command}: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        # Bad input: one clear line, no traceback (the message names the value and what is valid).
        print(f"hf-pept {command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["main", "train"]


if __name__ == "__main__":  # `python -m hf_pept.cli ...`, and `accelerate launch -m hf_pept.cli ...` on every rank
    sys.exit(main())
