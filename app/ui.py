"""The Gradio Blocks: Configure (form generated from the CLI's dataclasses, command, snippet, memory at the run's
model and at 1b), Runs (list, stop, resume, live charts, GPU), Compare (perplexity vs memory of finished runs, per
model size). A run keeps one colour in every chart.

Every component showing run state is refreshed from the run folders by a timer, so a reloaded page or a
restarted app shows the same runs. Each tab is built and wired by its own function; the handlers are plain
functions of the backend, the tab's components and the event's values, returning ``{component: update}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from . import charts, form, gpu, memory_view, runs
from .backend import REFERENCE_SIZE, RUN_TABLE_HEADERS, Backend

REFRESH_SECONDS = 2.0
RUN_MODEL = "the run's model"  # the memory size choice that follows the form's model
ERROR_MARK = "⚠"  # starts every error message, so a stale one can be told from a report
FIELDS_PER_ROW = 2
CSS = """
.field-error { color: #b91c1c; font-size: 0.85em; margin-top: -8px; }
#launch-message, #run-message { min-height: 1.5em; }
"""


def build_ui(backend: Backend) -> gr.Blocks:
    with gr.Blocks(title="hf-pept") as demo:
        gr.Markdown(
            "# hf-pept\nConfigure a pre-training run (ReLoRA, GaLore, full-rank, LoRA), see its memory, launch it, "
            "and watch loss, perplexity and memory live. Runs are `hf-pept train` processes writing to "
            f"`{backend.runs_root}`."
        )
        colors = gr.State({})  # per page: each run's colour, the same in every chart and refresh
        configure = configure_tab(demo, backend)
        run_list = runs_tab(demo, backend, colors)
        compare_tab(demo, backend, colors)
        wire_launch(backend, configure, run_list)
    return demo


# ----- Configure -----


@dataclass
class ConfigureTab:
    specs: list[form.FieldSpec]
    inputs: list
    errors: list
    accordions: list  # (section, accordion) of every method section
    general_error: Any
    command: Any
    load_button: Any
    snippet: Any
    run_name: Any
    launch_button: Any
    launch_message: Any
    memory_size: Any
    memory_plot: Any
    memory_table: Any
    measure_button: Any
    measure_message: Any
    drawn_panels: Any  # per page: the memory panels last drawn, so unchanged ones are not redrawn

    def values(self, raw) -> dict:
        return {spec.name: value for spec, value in zip(self.specs, raw)}


def _component(spec: form.FieldSpec):
    label = spec.name
    info = spec.help or None
    if spec.kind == form.KIND_BOOL:
        return gr.Checkbox(value=bool(spec.default), label=label, info=info, elem_id=f"field-{spec.name}")
    if spec.kind == form.KIND_CHOICE:
        return gr.Dropdown(
            choices=list(spec.choices), value=spec.default, label=label, info=info, elem_id=f"field-{spec.name}"
        )
    return gr.Textbox(
        value=form.to_text(spec, spec.default),
        label=label,
        info=info,
        placeholder="(none)" if spec.optional else None,
        max_lines=1,
        elem_id=f"field-{spec.name}",
    )


def _form_fields(schema) -> tuple[list, list, list]:
    """The form's sections as accordions of fields, each field with its (hidden) error line below it."""
    inputs, errors, accordions = [], [], []
    for section in schema.sections:
        is_run = section is schema.run
        with gr.Accordion(
            "Training run" if is_run else f"{section.title} knobs",
            open=True,
            visible=is_run or section.applies_to(_default_method(schema)),
        ) as accordion:
            for start in range(0, len(section.specs), FIELDS_PER_ROW):
                with gr.Row(equal_height=False):
                    for spec in section.specs[start : start + FIELDS_PER_ROW]:
                        with gr.Column(min_width=220):
                            inputs.append(_component(spec))
                            errors.append(
                                gr.Markdown(
                                    "", visible=False, elem_classes=["field-error"], elem_id=f"error-{spec.name}"
                                )
                            )
        if not is_run:
            accordions.append((section, accordion))
    return inputs, errors, accordions


def configure_tab(demo: gr.Blocks, backend: Backend) -> ConfigureTab:
    """The form, its command and Python snippet, the memory estimate; wired to validate on every change."""
    with gr.Tab("Configure", id="configure"):
        with gr.Row():
            with gr.Column(scale=5):
                inputs, errors, accordions = _form_fields(backend.schema)
            with gr.Column(scale=6):
                general_error = gr.Markdown("", visible=False, elem_classes=["field-error"])
                command = gr.Code(
                    label="CLI command (edit and load it back into the form)",
                    language="shell",
                    interactive=True,
                    elem_id="command",
                )
                load_button = gr.Button("Load command into form", size="sm")
                snippet = gr.Code(label="Python equivalent", language="python", interactive=False)
                with gr.Row():
                    run_name = gr.Textbox(
                        label="run name (empty: method-model-time)", max_lines=1, elem_id="run-name", scale=3
                    )
                    launch_button = gr.Button("Launch run", variant="primary", elem_id="launch", scale=1)
                launch_message = gr.Markdown(elem_id="launch-message")
                gr.Markdown(
                    "### Memory (estimated)\nAt the chosen model size and, beside it, at "
                    f"{REFERENCE_SIZE}: at a small model activations dominate and every method looks alike."
                )
                memory_size = gr.Dropdown(
                    choices=[RUN_MODEL, *backend.model_sizes],
                    value=RUN_MODEL,
                    label="estimate at model size",
                    elem_id="memory-size",
                )
                memory_plot = gr.Plot(label="memory", format="png")
                memory_table = gr.Markdown(elem_id="memory-table")
                measure_button = gr.Button("Measure (run a few steps of this config)", size="sm", elem_id="measure")
                measure_message = gr.Markdown()
    tab = ConfigureTab(
        specs=backend.schema.specs,
        inputs=inputs,
        errors=errors,
        accordions=accordions,
        general_error=general_error,
        command=command,
        load_button=load_button,
        snippet=snippet,
        run_name=run_name,
        launch_button=launch_button,
        launch_message=launch_message,
        memory_size=memory_size,
        memory_plot=memory_plot,
        memory_table=memory_table,
        measure_button=measure_button,
        measure_message=measure_message,
        drawn_panels=gr.State(None),
    )
    form_outputs = [
        *tab.errors,
        tab.general_error,
        tab.command,
        tab.snippet,
        *[accordion for _, accordion in tab.accordions],
        tab.memory_plot,
        tab.memory_table,
        tab.drawn_panels,
        tab.launch_button,
        tab.measure_button,
        tab.launch_message,
    ]
    form_inputs = [tab.drawn_panels, tab.launch_message, tab.memory_size, *tab.inputs]
    handler = partial(on_form, backend, tab)
    for component in [*tab.inputs, tab.memory_size]:
        component.change(handler, inputs=form_inputs, outputs=form_outputs, trigger_mode="always_last")
    demo.load(handler, inputs=form_inputs, outputs=form_outputs)
    # a launch refused for its run name is fixed by another name
    tab.run_name.change(clear_error, inputs=[tab.launch_message], outputs=[tab.launch_message])
    tab.load_button.click(
        partial(on_load_command, backend, tab), inputs=[tab.command], outputs=[*tab.inputs, tab.launch_message]
    )
    tab.measure_button.click(
        partial(on_measure, backend, tab),
        inputs=[tab.memory_size, *tab.inputs],
        outputs=[tab.memory_plot, tab.memory_table, tab.measure_message],
    )
    return tab


def on_form(backend: Backend, tab: ConfigureTab, last_panels, launch_message: str, memory_size: str, *raw) -> dict:
    """Errors at their fields, the command and snippet when valid, the method's sections, the memory bars (at
    ``memory_size`` and at the reference size).

    Launch and Measure are enabled only while the form is valid, and an error left by an earlier launch is
    cleared: it was about values that have changed since.
    """
    state = backend.form_state(tab.values(raw))
    general = state.errors.get(form.GENERAL_ERROR, "")
    valid = not state.errors
    out: dict = {
        tab.launch_button: gr.update(interactive=valid),
        tab.measure_button: gr.update(interactive=valid),
    }
    if is_error(launch_message):
        out[tab.launch_message] = ""
    for spec, error in zip(tab.specs, tab.errors):
        message = state.errors.get(spec.name)
        out[error] = gr.update(value=f"{ERROR_MARK} {message}" if message else "", visible=message is not None)
    out[tab.general_error] = gr.update(value=f"{ERROR_MARK} {general}" if general else "", visible=bool(general))
    out[tab.command] = state.command or "# fix the highlighted fields"
    out[tab.snippet] = state.snippet
    for section, accordion in tab.accordions:
        out[accordion] = gr.update(visible=section.applies_to(state.method))
    try:
        panels = backend.memory_panels(state, _size(memory_size))
    except (ValueError, TypeError, OSError) as err:
        return {
            **out,
            tab.memory_plot: None,
            tab.memory_table: f"{ERROR_MARK} Cannot estimate memory for this config: {err}",
            tab.drawn_panels: None,
        }
    if not panels and backend.estimate is None:
        return {
            **out,
            tab.memory_plot: None,
            tab.memory_table: "Memory estimates need `hf_pept.memory` (not installed).",
            tab.drawn_panels: None,
        }
    if panels and panels == last_panels:
        return {**out, tab.memory_plot: gr.update(), tab.memory_table: gr.update(), tab.drawn_panels: last_panels}
    return {
        **out,
        tab.memory_plot: memory_view.memory_figure(panels) if panels else None,
        tab.memory_table: memory_view.memory_table(panels) if panels else "",
        tab.drawn_panels: panels,
    }


def _size(memory_size: str | None) -> str | None:
    return None if memory_size in (None, "", RUN_MODEL) else memory_size


def is_error(message: str | None) -> bool:
    return str(message or "").startswith(ERROR_MARK)


def clear_error(message: str | None):
    """An empty message in place of an error one; any other message (a report of what was done) is kept."""
    return "" if is_error(message) else gr.update()


def on_load_command(backend: Backend, tab: ConfigureTab, text: str) -> dict:
    try:
        loaded = backend.load_command(text)
    except ValueError as err:
        return {tab.launch_message: f"{ERROR_MARK} {err}"}
    return {
        **{component: loaded[spec.name] for spec, component in zip(tab.specs, tab.inputs)},
        tab.launch_message: "Command loaded into the form.",
    }


def on_measure(backend: Backend, tab: ConfigureTab, memory_size: str, *raw) -> dict:
    """A short run of the config; its measured peak is marked on the config's bar at the run's model."""
    state = backend.form_state(tab.values(raw))
    try:
        summary = backend.measure(state)
        panels = backend.memory_panels(state, _size(memory_size))
        own_bars = backend.memory_bars(state)
    except (runs.RunError, ValueError, RuntimeError, OSError) as err:
        return {tab.measure_message: f"{ERROR_MARK} {err}"}
    label = next(iter(own_bars), None)
    own_title = backend.panel_title(state, str(state.typed.get(backend.schema.model_field)))
    measured_mb = {own_title: {label: float(summary[backend.memory_key])}} if label else {}
    return {
        tab.memory_plot: memory_view.memory_figure(panels, measured_mb) if panels else None,
        tab.memory_table: memory_view.memory_table(panels, measured_mb) if panels else "",
        tab.measure_message: memory_view.measured_note(summary, own_bars.get(label) if label else None),
    }


def _default_method(schema) -> str:
    spec = next(spec for spec in schema.run.specs if spec.name == schema.method_field)
    return str(spec.default)


# ----- Runs -----


@dataclass
class RunsTab:
    run_table: Any
    shown: Any
    selected: Any
    checkpoint: Any
    stop_button: Any
    resume_button: Any
    run_message: Any
    points: Any
    chart: Any
    error_tail: Any
    gpu_panel: Any
    drawn_curves: Any  # per page: what the chart shows (runs, record counts, colours)
    colors: Any  # per page: run name -> colour, shared with the Compare tab


def runs_tab(demo: gr.Blocks, backend: Backend, colors) -> RunsTab:
    """The run list, stop and resume, the live charts; refreshed from the run folders by a timer."""
    with gr.Tab("Runs", id="runs"):
        with gr.Row():
            run_table = gr.Dataframe(
                headers=RUN_TABLE_HEADERS,
                interactive=False,
                label="runs",
                elem_id="run-table",
                wrap=True,
                column_widths=["17%", "8%", "7%", "10%", "7%", "51%"],
            )
        with gr.Row():
            shown = gr.CheckboxGroup(label="runs on the charts", choices=[], elem_id="shown-runs", scale=4)
            selected = gr.Dropdown(label="run", choices=[], elem_id="selected-run", scale=2, allow_custom_value=True)
            checkpoint = gr.Dropdown(
                label="checkpoint to resume from (empty: latest)", choices=[], scale=2, allow_custom_value=True
            )
            stop_button = gr.Button("Stop (save checkpoint)", variant="stop", elem_id="stop", scale=1)
            resume_button = gr.Button("Resume", elem_id="resume", scale=1)
        run_message = gr.Markdown(elem_id="run-message")
        points = gr.Textbox(label="live", elem_id="points-summary", interactive=False, lines=2)
        chart = gr.Plot(label="training curves", show_label=False, format="png", elem_id="training-chart")
        error_tail = gr.Code(
            label="error (last lines of the run's log; the log is kept)", visible=False, language=None
        )
        gpu_panel = gr.Markdown(visible=gpu.cuda_present(), elem_id="gpu-panel")
    tab = RunsTab(
        run_table=run_table,
        shown=shown,
        selected=selected,
        checkpoint=checkpoint,
        stop_button=stop_button,
        resume_button=resume_button,
        run_message=run_message,
        points=points,
        chart=chart,
        error_tail=error_tail,
        gpu_panel=gpu_panel,
        drawn_curves=gr.State(None),
        colors=colors,
    )
    refresh_outputs = [
        tab.run_table,
        tab.shown,
        tab.selected,
        tab.checkpoint,
        tab.points,
        tab.chart,
        tab.error_tail,
        tab.gpu_panel,
        tab.drawn_curves,
        tab.colors,
    ]
    refresh_inputs = [tab.shown, tab.selected, tab.drawn_curves, tab.colors]
    handler = partial(on_refresh, backend, tab)
    timer = gr.Timer(REFRESH_SECONDS)
    timer.tick(handler, inputs=refresh_inputs, outputs=refresh_outputs, show_progress="hidden")
    demo.load(handler, inputs=refresh_inputs, outputs=refresh_outputs)
    tab.stop_button.click(partial(on_stop, backend), inputs=[tab.selected], outputs=[tab.run_message])
    tab.resume_button.click(
        partial(on_resume, backend), inputs=[tab.selected, tab.checkpoint], outputs=[tab.run_message]
    )
    return tab


def on_refresh(backend: Backend, tab: RunsTab, shown_names, selected_name, last_drawn, colors) -> dict:
    """The run list, the runs on the chart (by default those still going), the selected run's checkpoints and
    error tail, the chart (redrawn only when a shown run has new records), the GPU panel."""
    infos = backend.list_runs()
    all_names = [info.name for info in infos]
    colors = charts.run_colors(all_names, colors)  # every run's, so a run shown later keeps the same colour
    shown_names = [n for n in (shown_names or []) if n in all_names]
    if not shown_names:
        shown_names = [i.name for i in infos if i.status in ("running", "stopping")] or all_names[:1]
    if selected_name not in all_names:
        selected_name = shown_names[0] if shown_names else None
    current = next((info for info in infos if info.name == selected_name), None)
    metrics = backend.metrics(sorted(shown_names))
    tail = current.error_tail if current is not None and current.status == "failed" else ""
    drawn = [(run.name, len(run.records), len(run.events), colors[run.name]) for run in metrics]
    if not metrics:
        figure = None
    elif drawn == last_drawn:
        figure = gr.update()  # nothing new: keep the picture instead of redrawing it every tick
    else:
        figure = charts.training_figure(metrics, colors=colors)
    return {
        tab.run_table: backend.run_table(infos),
        tab.shown: gr.update(choices=all_names, value=shown_names),
        tab.selected: gr.update(choices=all_names, value=selected_name),
        tab.checkpoint: gr.update(choices=current.checkpoints if current else []),
        tab.points: charts.points_summary(metrics),
        tab.chart: figure,
        tab.error_tail: gr.update(value=tail, visible=bool(tail)),
        tab.gpu_panel: gpu.format_status(gpu.gpu_status()) if gpu.cuda_present() else "",
        tab.drawn_curves: drawn,
        tab.colors: colors,
    }


def on_stop(backend: Backend, name: str) -> str:
    try:
        info = backend.stop(name)
    except runs.RunError as err:
        return f"{ERROR_MARK} {err}"
    saved = f"; checkpoints: {', '.join(info.checkpoints)}" if info.checkpoints else ""
    return f"Run **{info.name}** is {info.status}{saved}."


def on_resume(backend: Backend, name: str, checkpoint_name: str | None) -> str:
    try:
        info = backend.resume(name, checkpoint_name)
    except runs.RunError as err:
        return f"{ERROR_MARK} {err}"
    return f"Resumed **{info.name}** (pid {info.pid})."


# ----- launch (Configure → Runs) -----


def wire_launch(backend: Backend, configure: ConfigureTab, run_list: RunsTab) -> None:
    """Launch the form's run and show it, selected and on the chart, in the Runs tab."""
    configure.launch_button.click(
        partial(on_launch, backend, configure, run_list),
        inputs=[run_list.shown, configure.run_name, *configure.inputs],
        outputs=[configure.launch_message, run_list.selected, run_list.shown],
    )


def on_launch(backend: Backend, configure: ConfigureTab, run_list: RunsTab, shown_names, name, *raw) -> dict:
    try:
        info = backend.launch(name, configure.values(raw))
    except (runs.RunError, ValueError) as err:
        return {configure.launch_message: f"{ERROR_MARK} {err}"}
    names_now = [run.name for run in backend.list_runs()]
    shown_now = [n for n in (shown_names or []) if n in names_now] + [info.name]
    return {
        configure.launch_message: f"Launched **{info.name}** (pid {info.pid}) in `{info.path}`; see the Runs tab.",
        run_list.selected: gr.update(choices=names_now, value=info.name),
        run_list.shown: gr.update(choices=names_now, value=shown_now),
    }


# ----- Compare -----


@dataclass
class CompareTab:
    refresh_button: Any
    plot: Any
    table: Any
    csv_label: Any
    csv_table: Any
    colors: Any  # per page: run name -> colour, shared with the Runs tab


def compare_tab(demo: gr.Blocks, backend: Backend, colors) -> CompareTab:
    """Perplexity against peak memory of the finished runs, and the newest `hf-pept compare` table."""
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(
            "Finished runs, **one scatter per model size**: perplexities of different model sizes are not "
            "comparable, so runs are only set side by side with runs of their own size."
        )
        tab = CompareTab(
            refresh_button=gr.Button("Refresh comparison", size="sm"),
            plot=gr.Plot(label="perplexity vs memory", format="png", elem_id="compare-plot"),
            table=gr.Dataframe(
                label="finished runs (summary.json), by model size", interactive=False, elem_id="compare-table"
            ),
            csv_label=gr.Markdown(elem_id="compare-notes"),
            csv_table=gr.Dataframe(
                label="`hf-pept compare` table", interactive=False, visible=False, elem_id="compare-csv"
            ),
            colors=colors,
        )
    outputs = [tab.plot, tab.table, tab.csv_label, tab.csv_table, tab.colors]
    handler = partial(on_compare, backend, tab)
    tab.refresh_button.click(handler, inputs=[tab.colors], outputs=outputs)
    demo.load(handler, inputs=[tab.colors], outputs=outputs)
    return tab


def on_compare(backend: Backend, tab: CompareTab, colors: dict) -> dict:
    """The finished runs by model size (a scatter each, a table sorted by size), the `hf-pept compare` table;
    numbers rounded to their unit."""
    import pandas as pd

    model_key = backend.schema.model_field
    groups = charts.group_rows(backend.comparison(), model_key, backend.model_sizes)
    # the same assignment as the Runs tab's (every listed run), so a run has one colour in both
    colors = charts.run_colors([info.name for info in backend.list_runs()], colors)
    figure = (
        charts.perplexity_memory_figure(groups, backend.perplexity_key, backend.memory_key, colors) if groups else None
    )
    rows = [row for group in groups.values() for row in group]
    first = ("run", model_key, backend.schema.method_field, backend.perplexity_key, backend.memory_key)
    csv_path, csv_rows = backend.compare_table()
    if csv_path is None:
        note = f"No `comparison.csv` under `{backend.runs_root}` yet: run `hf-pept compare` there."
        csv_update = gr.update(visible=False)
    else:
        notes = "".join(f"\n- {line}" for line in backend.compare_notes(csv_path))
        note = f"From `{csv_path}`:" + (f"\n{notes}\n" if notes else "")
        header, body = (csv_rows[0], csv_rows[1:]) if csv_rows else ([], [])
        cells = [
            [charts.format_value(key, value) for key, value in zip(header, line + [""] * len(header))] for line in body
        ]
        csv_update = gr.update(value=pd.DataFrame(cells, columns=header), visible=True)
    return {
        tab.plot: figure,
        tab.table: pd.DataFrame(charts.format_rows(rows, first)) if rows else None,
        tab.csv_label: note,
        tab.csv_table: csv_update,
        tab.colors: colors,
    }
