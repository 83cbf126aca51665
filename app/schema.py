"""What the app needs from the CLI, read from the CLI's own dataclasses: the form's sections, the parser, the flags.

This is the one place the app depends on ``hf_pept.run_args`` / ``hf_pept.cli``: the run options (one
``RunArguments`` dataclass) and one dataclass of knobs per method family. A section is shown for the methods it
applies to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import form


@dataclass
class Section:
    title: str
    config_class: type
    methods: tuple[str, ...]  # the methods whose knobs these are; () = every method
    specs: list[form.FieldSpec] = field(default_factory=list)
    # The method's own config, built from the form's typed values, for the checks the mirrored dataclass does not
    # do itself; ``check_names`` maps the config's field names (as its messages name them) to the form's.
    check: Callable[[dict], Any] | None = None
    check_names: dict[str, str] = field(default_factory=dict)

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods


@dataclass
class Schema:
    """The form of ``hf-pept train``: the run section first, then the per-method sections."""

    run: Section
    method_sections: list[Section]
    parser_classes: tuple[type, ...]
    methods: tuple[str, ...]
    method_field: str = "method"
    model_field: str = "model"
    dataset_field: str = "dataset"
    output_dir_field: str = "output_dir"
    resume_field: str = "resume_from_checkpoint"
    max_steps_field: str = "max_steps"
    python_import: str = "hf_pept.run_args"
    python_entry: str = "from hf_pept.cli import train"
    # the entry's keyword for each dataclass (``train(run=..., galore=...)``); positional when absent (``hf-pept``'s
    # ``train(run, *option_groups)`` takes every group positionally, in any order)
    entry_params: dict[type, str] = field(default_factory=dict)

    @property
    def sections(self) -> list[Section]:
        return [self.run, *self.method_sections]

    @property
    def specs(self) -> list[form.FieldSpec]:
        return [spec for section in self.sections for spec in section.specs]

    def active_specs(self, method: str) -> list[form.FieldSpec]:
        """The fields that reach the command for ``method`` (other methods' knobs are left out)."""
        return [spec for section in self.sections if section.applies_to(method) for spec in section.specs]

    def parser(self):
        from transformers import HfArgumentParser

        return HfArgumentParser(self.parser_classes)

    def short_run_argv(self, steps: int, typed: dict) -> list[str]:
        """Options that turn a config into a run of ``steps`` optimizer steps (the memory measurement), with its
        final evaluation on one batch only (evaluation needs less memory than a training step)."""
        argv = [f"--{self.max_steps_field}", str(steps)]
        if all(name in typed for name in ("seq_len", "batch_size")):
            argv += ["--max_eval_tokens", str(int(typed["seq_len"]) * int(typed["batch_size"]))]
        return argv

    @property
    def output_dir_flag(self) -> str:
        return f"--{self.output_dir_field}"

    @property
    def resume_flag(self) -> str:
        return f"--{self.resume_field}"


def _hidden_fields(schema_run_class: type, *names: str) -> tuple[str, ...]:
    present = {spec.name for spec in form.field_specs(schema_run_class)}
    return tuple(name for name in names if name in present)


def load_schema() -> Schema:
    """The schema of the installed ``hf-pept train``."""
    from hf_pept import run_args

    run_class = run_args.RunArguments
    # The app chooses the run folder and the checkpoint itself.
    hidden = _hidden_fields(run_class, "output_dir", "resume_from_checkpoint")
    run = Section("Run", run_class, (), form.field_specs(run_class, skip=hidden))
    sections = [
        Section(title, config_class, tuple(methods), form.field_specs(config_class))
        for title, config_class, methods in run_args.method_sections()
    ]
    _attach_config_checks(sections)
    method_spec = next(spec for spec in run.specs if spec.name == "method")
    return Schema(
        run=run,
        method_sections=sections,
        parser_classes=tuple(run_args.ARGUMENT_CLASSES),
        methods=tuple(method_spec.choices),
    )


def _attach_config_checks(sections: list[Section]) -> None:
    """Sections mirrored from a method config (``config_fields``: ours -> theirs) are checked as a run is, by
    ``hf_pept.run_args.prepare``: the chosen method's config built from the form's values, rank resolved."""
    from hf_pept import run_args

    def check(typed: dict):
        groups = [
            cls(**{f.name: typed[f.name] for f in dataclasses.fields(cls) if f.name in typed})
            for cls in run_args.ARGUMENT_CLASSES
        ]
        return run_args.prepare(*groups).config

    config_names = {"r": "rank", "rank": "rank"}  # the rank as LoRA / ReLoRA and as GaLore name it
    for section in sections:
        config_names |= {theirs: ours for ours, theirs in getattr(section.config_class, "config_fields", {}).items()}
    for section in sections:
        if getattr(section.config_class, "config_fields", None):
            section.check = check
            section.check_names = config_names


def python_snippet(schema: Schema, method: str, typed: dict) -> str:
    """The Python equivalent of the command: the same dataclasses, with only the values changed from default."""
    sections = [section for section in schema.sections if section.applies_to(method)]
    lines = [
        f"from {schema.python_import} import {', '.join(s.config_class.__name__ for s in sections)}",
        schema.python_entry,
        "",
    ]
    names = []
    for section in sections:
        kwargs = [
            f"{spec.name}={typed[spec.name]!r}"
            for spec in section.specs
            if spec.name in typed and not form._same(spec, typed[spec.name], spec.default)
        ]
        var = section.config_class.__name__.removesuffix("Arguments").lower() + "_args"
        keyword = schema.entry_params.get(section.config_class)
        names.append(f"{keyword}={var}" if keyword else var)
        call = f"{section.config_class.__name__}({', '.join(kwargs)})"
        if len(call) > 100:
            call = f"{section.config_class.__name__}(\n    " + ",\n    ".join(kwargs) + ",\n)"
        lines.append(f"{var} = {call}")
    entry_name = schema.python_entry.rsplit(" ", 1)[-1]
    lines.append(f"{entry_name}({', '.join(names)})")
    return "\n".join(lines)


def load_estimate(schema: Schema):
    """``(method, typed form values) -> bytes per component`` from ``hf_pept.memory.estimate``; None without it."""
    try:
        from hf_pept import memory
    except ImportError:
        return None

    from hf_pept.models import MODEL_SIZES, is_model_size

    def estimate(method: str, typed: dict):
        model = str(typed.get(schema.model_field, ""))
        if not is_model_size(model) and not Path(model).expanduser().exists():
            # a hub name would be fetched on every keystroke; the estimate needs a size or a local folder
            raise ValueError(
                f"`{schema.model_field}` {model!r} is neither a size ({', '.join(MODEL_SIZES)}) nor a local folder"
            )
        return memory.estimate(method=method, **{k: v for k, v in typed.items() if k != schema.method_field})

    return estimate
