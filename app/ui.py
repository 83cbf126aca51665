"""The Gradio Blocks: Configure (form generated from the CLI's dataclasses, command, snippet, memory), Runs (list,
stop, resume, live charts, GPU), Compare (perplexity vs memory of finished runs).

Every component showing run state is refreshed from the run folders by a timer, so a reloaded page or a
restarted app shows the same runs.
"""

from __future__ import annotations

import gradio as gr

from . import charts, form, gpu, memory_view, runs
from .backend import RUN_TABLE_HEADERS, Backend

REFRESH_SECONDS = 2.0
FIELDS_PER_ROW = 2
CSS = """
.field-error { color: #b91c1c; font-size: 0.85em; margin-top: -8px; }
#launch-message, #run-message { min-height: 1.5em; }
"""


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


def _error_updates(specs: list[form.FieldSpec], errors: dict[str, str]) -> list:
    return [
        gr.update(value=f"⚠ {errors[s.name]}" if s.name in errors else "", visible=s.name in errors) for s in specs
    ]


def build_ui(backend: Backend) -> gr.Blocks:
    schema = backend.schema
    specs = schema.specs
    names = [spec.name for spec in specs]

    with gr.Blocks(title="hf-pept") as demo:
        gr.Markdown(
            "# hf-pept\nConfigure a pre-training run (ReLoRA, GaLore, full-rank, LoRA), see its memory, launch it, "
            "and watch loss, perplexity and memory live. Runs are `hf-pept train` processes writing to "
            f"`{backend.runs_root}`."
        )
        inputs, errors, accordions = [], [], []
        with gr.Tab("Configure", id="configure"):
            with gr.Row():
                with gr.Column(scale=5):
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
                                                    "",
                                                    visible=False,
                                                    elem_classes=["field-error"],
                                                    elem_id=f"error-{spec.name}",
                                                )
                                            )
                        if not is_run:
                            accordions.append((section, accordion))
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
                    gr.Markdown("### Memory (estimated)")
                    memory_plot = gr.Plot(label="memory", format="png")
                    memory_table = gr.Markdown(elem_id="memory-table")
                    measure_button = gr.Button("Measure (run a few steps of this config)", size="sm")
                    measure_message = gr.Markdown()

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
                selected = gr.Dropdown(
                    label="run", choices=[], elem_id="selected-run", scale=2, allow_custom_value=True
                )
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

        with gr.Tab("Compare", id="compare"):
            compare_button = gr.Button("Refresh comparison", size="sm")
            compare_plot = gr.Plot(label="perplexity vs memory", format="png")
            compare_table = gr.Dataframe(label="finished runs (summary.json)", interactive=False)
            compare_csv_label = gr.Markdown()
            compare_csv = gr.Dataframe(label="`hf-pept compare` table", interactive=False, visible=False)

        # ----- configure events -----
        def values_of(raw) -> dict:
            return dict(zip(names, raw))

        drawn_bars = gr.State(None)  # per page: the bars last drawn, so unchanged bars are not redrawn

        def on_form(last_bars, *raw):
            state = backend.form_state(values_of(raw))
            general = state.errors.get(form.GENERAL_ERROR, "")
            updates = _error_updates(specs, state.errors)
            updates.append(gr.update(value=f"⚠ {general}" if general else "", visible=bool(general)))
            updates += [state.command or "# fix the highlighted fields", state.snippet]
            for section, _ in accordions:
                updates.append(gr.update(visible=section.applies_to(state.method)))
            try:
                bars = backend.memory_bars(state)
            except (ValueError, TypeError, OSError) as err:
                return [*updates, None, f"⚠ Cannot estimate memory for this config: {err}", None]
            if not bars and backend.estimate is None:
                return [*updates, None, "Memory estimates need `hf_pept.memory` (not installed).", None]
            if bars and bars == last_bars:
                return [*updates, gr.update(), gr.update(), last_bars]
            figure = memory_view.memory_figure(bars) if bars else None
            return [*updates, figure, memory_view.memory_table(bars) if bars else "", bars]

        form_outputs = [
            *errors,
            general_error,
            command,
            snippet,
            *[acc for _, acc in accordions],
            memory_plot,
            memory_table,
            drawn_bars,
        ]
        form_inputs = [drawn_bars, *inputs]
        for component in inputs:
            component.change(on_form, inputs=form_inputs, outputs=form_outputs, trigger_mode="always_last")
        demo.load(on_form, inputs=form_inputs, outputs=form_outputs)

        def on_load_command(text):
            try:
                loaded = backend.load_command(text)
            except ValueError as err:
                return [gr.update() for _ in inputs] + [f"⚠ {err}"]
            return [loaded[name] for name in names] + ["Command loaded into the form."]

        load_button.click(on_load_command, inputs=[command], outputs=[*inputs, launch_message])

        def on_launch(shown_names, name, *raw):
            try:
                info = backend.launch(name, values_of(raw))
            except (runs.RunError, ValueError) as err:
                return f"⚠ {err}", gr.update(), gr.update()
            names_now = [run.name for run in backend.list_runs()]
            shown_now = [n for n in (shown_names or []) if n in names_now] + [info.name]
            return (
                f"Launched **{info.name}** (pid {info.pid}) in `{info.path}`; see the Runs tab.",
                gr.update(choices=names_now, value=info.name),
                gr.update(choices=names_now, value=shown_now),
            )

        launch_button.click(on_launch, inputs=[shown, run_name, *inputs], outputs=[launch_message, selected, shown])

        def on_measure(*raw):
            state = backend.form_state(values_of(raw))
            try:
                summary = backend.measure(state)
                bars = backend.memory_bars(state)
            except (runs.RunError, ValueError, RuntimeError, OSError) as err:
                return gr.update(), gr.update(), f"⚠ {err}"
            peak = float(summary[backend.memory_key])
            label = next(iter(bars), None)
            measured_mb = {label: peak} if label else {}
            return (
                memory_view.memory_figure(bars, measured_mb) if bars else None,
                memory_view.memory_table(bars, measured_mb) if bars else "",
                memory_view.measured_note(summary, bars.get(label) if label else None),
            )

        measure_button.click(on_measure, inputs=inputs, outputs=[memory_plot, memory_table, measure_message])

        # ----- runs events -----
        drawn_curves = gr.State(None)  # per page: what the chart shows (runs and record counts)

        def refresh(shown_names, selected_name, last_drawn):
            infos = backend.list_runs()
            all_names = [info.name for info in infos]
            shown_names = [n for n in (shown_names or []) if n in all_names]
            if not shown_names:
                shown_names = [i.name for i in infos if i.status in ("running", "stopping")] or all_names[:1]
            if selected_name not in all_names:
                selected_name = shown_names[0] if shown_names else None
            by_name = {info.name: info for info in infos}
            current = by_name.get(selected_name)
            metrics = backend.metrics(sorted(shown_names))  # sorted: a run keeps its colour between refreshes
            tail = current.error_tail if current is not None and current.status == "failed" else ""
            drawn = [(run.name, len(run.records), len(run.events)) for run in metrics]
            if not metrics:
                figure = None
            elif drawn == last_drawn:
                figure = gr.update()  # nothing new: keep the picture instead of redrawing it every tick
            else:
                figure = charts.training_figure(metrics)
            return (
                backend.run_table(infos),
                gr.update(choices=all_names, value=shown_names),
                gr.update(choices=all_names, value=selected_name),
                gr.update(choices=current.checkpoints if current else []),
                charts.points_summary(metrics),
                figure,
                gr.update(value=tail, visible=bool(tail)),
                gpu.format_status(gpu.gpu_status()) if gpu.cuda_present() else "",
                drawn,
            )

        refresh_outputs = [run_table, shown, selected, checkpoint, points, chart, error_tail, gpu_panel, drawn_curves]
        refresh_inputs = [shown, selected, drawn_curves]
        timer = gr.Timer(REFRESH_SECONDS)
        timer.tick(refresh, inputs=refresh_inputs, outputs=refresh_outputs, show_progress="hidden")
        demo.load(refresh, inputs=refresh_inputs, outputs=refresh_outputs)

        def on_stop(name):
            try:
                info = backend.stop(name)
            except runs.RunError as err:
                return f"⚠ {err}"
            saved = f"; checkpoints: {', '.join(info.checkpoints)}" if info.checkpoints else ""
            return f"Run **{info.name}** is {info.status}{saved}."

        stop_button.click(on_stop, inputs=[selected], outputs=[run_message])

        def on_resume(name, checkpoint_name):
            try:
                info = backend.resume(name, checkpoint_name)
            except runs.RunError as err:
                return f"⚠ {err}"
            return f"Resumed **{info.name}** (pid {info.pid})."

        resume_button.click(on_resume, inputs=[selected, checkpoint], outputs=[run_message])

        # ----- compare -----
        def on_compare():
            import pandas as pd

            rows = backend.comparison()
            figure = (
                charts.perplexity_memory_figure(rows, backend.perplexity_key, backend.memory_key) if rows else None
            )
            csv_path, csv_rows = backend.compare_table()
            if csv_path is None:
                note = f"No `comparison.csv` under `{backend.runs_root}` yet: run `hf-pept compare` there."
                csv_update = gr.update(visible=False)
            else:
                note = f"From `{csv_path}`:"
                csv_update = gr.update(value=pd.DataFrame(csv_rows[1:], columns=csv_rows[0]), visible=True)
            return figure, pd.DataFrame(rows).round(4) if rows else None, note, csv_update

        compare_outputs = [compare_plot, compare_table, compare_csv_label, compare_csv]
        compare_button.click(on_compare, outputs=compare_outputs)
        demo.load(on_compare, outputs=compare_outputs)
    return demo


def _default_method(schema) -> str:
    spec = next(spec for spec in schema.run.specs if spec.name == schema.method_field)
    return str(spec.default)
