"""The app's actions as plain functions of form values and run folders (no Gradio here, so they are unit-tested).

``ui.py`` wires these to components. All state lives in the run folders; a backend holds only where they are and
how to reach the CLI.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import charts, form, memory_view, runs
from .schema import Schema, python_snippet

DATASET_SUFFIXES = (".txt", ".jsonl", ".json", ".text")
# The memory panel's second estimate: at the largest size both papers pre-train, optimizer state and gradients
# outweigh activations, so the methods differ there even when the run itself is tiny.
REFERENCE_SIZE = "1b"
RUN_TABLE_HEADERS = ["run", "status", "last step", "checkpoints", "pid", "command"]


@dataclass
class FormState:
    """Everything derived from the form's current values."""

    method: str
    typed: dict[str, Any]
    errors: dict[str, str]
    argv: list[str] = field(default_factory=list)
    command: str = ""
    snippet: str = ""
    reference_values: dict[str, Any] = field(default_factory=dict)  # every section's valid values


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.startswith((".", "~")) or text.endswith(DATASET_SUFFIXES)


def _checkpoint_cell(info: runs.RunInfo) -> str:
    """``3``, or ``3 (+1 incomplete: checkpoint-40)`` when a save was cut short (never resumed from)."""
    cell = str(len(info.checkpoints))
    if info.incomplete_checkpoints:
        names = ", ".join(info.incomplete_checkpoints)
        cell += f" (+{len(info.incomplete_checkpoints)} incomplete: {names})"
    return cell


class Backend:
    def __init__(
        self,
        schema: Schema,
        runs_root: str | os.PathLike,
        estimate: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        reference_methods: tuple[str, ...] = ("full", "lora", "relora", "galore"),
        cli: list[str] | None = None,
        measure_steps: int = 5,
        model_sizes: tuple[str, ...] | None = None,
    ):
        self.schema = schema
        self.measure_steps = measure_steps
        self.runs_root = Path(runs_root).resolve()
        self.estimate = estimate
        self.reference_methods = tuple(m for m in reference_methods if m in schema.methods)
        self.cli = cli
        if model_sizes is None:
            from hf_pept.models import MODEL_SIZES

            model_sizes = tuple(MODEL_SIZES)
        self.model_sizes = model_sizes  # what the memory panel can estimate at besides the run's model

    # ----- configure -----
    def form_state(self, values: dict[str, Any]) -> FormState:
        """Validate the form (the dataclasses' own checks), and build the command and snippet when valid."""
        method = str(values.get(self.schema.method_field) or "")
        specs = self.schema.active_specs(method) if method in self.schema.methods else self.schema.specs
        typed, errors = form.validate(specs, values)
        for name in (self.schema.dataset_field, self.schema.model_field):
            text = typed.get(name)
            if isinstance(text, str) and _looks_like_path(text) and not Path(text).expanduser().exists():
                errors.setdefault(name, f"`{name}`: no file or folder at {text!r}")
        for section in self.schema.sections:
            if section.check is None or not section.applies_to(method) or errors:
                continue
            try:
                section.check(typed)
            except (ValueError, TypeError) as err:
                message = str(err)
                names = [section.check_names[n] for n in form._fields_named(message, list(section.check_names))]
                changed = [
                    s.name for s in section.specs if s.name in typed and not form._same(s, typed[s.name], s.default)
                ]
                for name in names or changed or [form.GENERAL_ERROR]:
                    errors.setdefault(name, message)
        state = FormState(method=method, typed=typed, errors=errors)
        for spec in self.schema.specs:
            try:
                state.reference_values[spec.name] = form.coerce(spec, values.get(spec.name, spec.default))
            except ValueError:
                state.reference_values[spec.name] = spec.default
        if not errors:
            state.argv = form.to_argv(specs, values)
            state.command = form.format_command(state.argv)
            state.snippet = python_snippet(self.schema, method, typed)
        return state

    def load_command(self, text: str) -> dict[str, Any]:
        """Form values of a pasted command (``ValueError`` with the parser's message when it does not parse)."""
        parsed = form.parse_command(text, self.schema.parser())
        return form.values_to_form(self.schema.specs, parsed)

    # ----- memory -----
    def memory_bars(self, state: FormState, model: str | None = None) -> dict[str, dict[str, float]]:
        """Estimated MB per component: the chosen config, then each reference method with the same model, data
        shape and rank (the form's values, also those of sections hidden for the chosen method); at ``model``
        (a size name) instead of the form's model when given. Options left empty (a rank of None: the method's
        default for the model) are not passed, so the estimate applies its own default."""
        if self.estimate is None or state.errors:
            return {}
        at = {self.schema.model_field: model} if model else {}

        def options(values: dict, method: str) -> dict:
            given = {name: value for name, value in values.items() if value is not None}
            return {**given, **at, self.schema.method_field: method}

        config = self.estimate(state.method, options(state.typed, state.method))
        bars = {f"this config ({state.method})": memory_view.breakdown_mb(config)}
        for method in self.reference_methods:
            label = "full-rank AdamW" if method == "full" else method
            bars[label] = memory_view.breakdown_mb(self.estimate(method, options(state.reference_values, method)))
        return bars

    def memory_panels(self, state: FormState, size: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """The memory bars at ``size`` (default: the form's model), and at :data:`REFERENCE_SIZE` beside them,
        keyed by a title naming the model size."""
        if self.estimate is None or state.errors:
            return {}
        model = str(state.typed.get(self.schema.model_field, ""))
        size = size or model
        panels = {self.panel_title(state, size): self.memory_bars(state, size)}
        if size != REFERENCE_SIZE and REFERENCE_SIZE in self.model_sizes:
            panels[self.panel_title(state, REFERENCE_SIZE)] = self.memory_bars(state, REFERENCE_SIZE)
        return panels

    def panel_title(self, state: FormState, size: str) -> str:
        return f"{size} (the run's model)" if size == state.typed.get(self.schema.model_field) else size

    def measure(self, state: FormState, timeout: float = 600.0) -> dict[str, Any]:
        """A short run of this config (``measure_steps`` steps through the CLI, in the scratch folder
        ``runs_root/.measure``); returns its ``summary.json``, whose ``peak_memory_mb`` is the measured peak."""
        if state.errors:
            raise runs.RunError("Fix the highlighted fields first: " + "; ".join(state.errors.values()))
        argv = [*state.argv, *self.schema.short_run_argv(self.measure_steps, state.typed)]
        name = runs.new_run_name("measure-" + state.method, str(state.typed.get(self.schema.model_field)))
        info = runs.launch(
            self.runs_root / ".measure", name, argv, output_dir_flag=self.schema.output_dir_flag, cli=self.cli
        )
        info = self.wait_finished(info, timeout)
        summary = charts.read_summary(info.path) or {}
        if not isinstance(summary.get(self.memory_key), (int, float)):
            tail = info.error_tail or runs.tail(info.path / runs.PROCESS_LOG, 10)
            raise RuntimeError(f"The measuring run ({info.status}) reported no `{self.memory_key}`: {tail}")
        return summary

    perplexity_key = "eval_perplexity"
    memory_key = "peak_memory_mb"

    # ----- runs -----
    def launch(self, name: str, values: dict[str, Any]) -> runs.RunInfo:
        state = self.form_state(values)
        if state.errors:
            raise runs.RunError("Fix the highlighted fields first: " + "; ".join(state.errors.values()))
        name = (name or "").strip() or runs.new_run_name(state.method, str(state.typed.get(self.schema.model_field)))
        return runs.launch(self.runs_root, name, state.argv, output_dir_flag=self.schema.output_dir_flag, cli=self.cli)

    def stop(self, name: str) -> runs.RunInfo:
        return runs.stop_run(self._run_dir(name))

    def resume(self, name: str, checkpoint: str | None) -> runs.RunInfo:
        return runs.resume_run(
            self._run_dir(name),
            checkpoint or None,
            output_dir_flag=self.schema.output_dir_flag,
            resume_flag=self.schema.resume_flag,
            cli=self.cli,
        )

    def _run_dir(self, name: str) -> Path:
        """The folder of the run listed as ``name`` (a path under the runs folder, e.g. ``compare/galore``)."""
        if not name:
            raise runs.RunError("Select a run first.")
        run_dir = (self.runs_root / name).resolve()
        if not run_dir.is_relative_to(self.runs_root) or not run_dir.is_dir():
            raise runs.RunError(f"No run folder {name!r} in {self.runs_root}.")
        return run_dir

    def list_runs(self) -> list[runs.RunInfo]:
        return runs.list_runs(self.runs_root)

    def run_table(self, infos: list[runs.RunInfo]) -> list[list[Any]]:
        return [
            [
                info.name,
                info.status,
                info.last_step if info.last_step is not None else "",
                _checkpoint_cell(info),
                info.pid or "",
                " ".join(info.command),
            ]
            for info in infos
        ]

    def metrics(self, names: list[str]) -> list[charts.RunMetrics]:
        """The records of the runs listed as ``names``, each named as listed."""
        found = []
        for name in names:
            try:
                run_dir = self._run_dir(name)
            except runs.RunError:
                continue  # gone since the list was read
            found.append(charts.read_metrics(run_dir, name=name))
        return found

    def comparison(self) -> list[dict]:
        """The finished runs of the run list (with those ``hf-pept compare`` wrote into a sub-folder)."""
        finished = [info.path for info in self.list_runs() if info.status == "finished"]
        return charts.comparison_rows(finished, root=self.runs_root)

    def compare_table(self) -> tuple[Path | None, list[list[str]]]:
        """The newest ``comparison.csv`` that ``hf-pept compare`` wrote under the runs folder (path, rows)."""
        found = [p for pattern in ("comparison.csv", "*/comparison.csv") for p in self.runs_root.glob(pattern)]
        if not found:
            return None, []
        newest = max(found, key=lambda p: p.stat().st_mtime)
        with open(newest, newline="", encoding="utf-8") as handle:
            return newest, list(csv.reader(handle))

    @staticmethod
    def compare_notes(csv_path: Path) -> list[str]:
        """The lines ``hf-pept compare`` printed under its table (``comparison.txt`` beside ``csv_path``): what each
        column that could mislead measures, the model, the unigram reference; [] when there is no such file."""
        try:
            text = (csv_path.parent / "comparison.txt").read_text(encoding="utf-8")
        except OSError:
            return []
        _, _, after_table = text.partition("\n\n")
        return [line for line in after_table.splitlines() if line.strip()]

    def wait_finished(self, info: runs.RunInfo, timeout: float) -> runs.RunInfo:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            info = runs.run_info(info.path)
            if info.status not in ("running", "stopping"):
                return info
            time.sleep(0.5)
        return runs.stop_run(info.path, grace_seconds=5)
