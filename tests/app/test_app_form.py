"""Form ↔ command round trip and validation, against dataclasses parsed by transformers' HfArgumentParser (the
parser the CLI is generated with), so the command the form writes is the one the CLI reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
from transformers import HfArgumentParser

from hf_pept.app import form


@dataclass
class Knobs:
    rank: int = field(default=8, metadata={"help": "rank r"})
    scale: float = field(default=0.25, metadata={"help": "scale α"})
    mode: Literal["magnitude", "random", "zero"] = field(default="magnitude", metadata={"help": "reset mode"})
    ratio: Optional[float] = field(default=None, metadata={"help": "prune ratio"})  # noqa: UP045 (peft configs use Optional)
    layerwise: bool = field(default=False, metadata={"help": "per-layer updates"})
    targets: Optional[list[str]] = field(default=None, metadata={"help": "target modules"})  # noqa: UP045
    name: str = field(default="tiny", metadata={"help": "model"})

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"`rank` must be >= 1, got {self.rank}")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.mode == "zero" and self.ratio is not None:
            raise ValueError("a zero reset takes no pruning fraction")


@dataclass
class Other:
    steps: int = field(default=100, metadata={"help": "steps"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})


SPECS = form.field_specs(Knobs) + form.field_specs(Other)
PARSER = HfArgumentParser((Knobs, Other))


def test_specs_read_types_defaults_and_help_from_the_dataclass():
    by_name = {spec.name: spec for spec in SPECS}
    assert by_name["rank"].kind == form.KIND_INT and by_name["rank"].default == 8
    assert by_name["scale"].kind == form.KIND_FLOAT and by_name["scale"].help == "scale α"
    assert by_name["mode"].kind == form.KIND_CHOICE and by_name["mode"].choices == ("magnitude", "random", "zero")
    assert by_name["ratio"].optional and by_name["ratio"].default is None
    assert by_name["layerwise"].kind == form.KIND_BOOL
    assert by_name["targets"].kind == form.KIND_LIST


def test_defaults_give_an_empty_command():
    values = form.values_to_form(SPECS, {})
    assert form.to_argv(SPECS, values) == []


@pytest.mark.parametrize(
    "entries",
    [
        {"rank": "16", "scale": "0.5", "mode": "random", "ratio": "0.999", "steps": "7", "lr": "3e-4"},
        {"layerwise": True, "targets": "q_proj v_proj", "name": "my model/with space"},
        {"rank": "8", "lr": "0.001"},  # equal to the defaults: nothing on the command line
    ],
)
def test_form_to_command_to_cli_parser_round_trip(entries):
    values = {**form.values_to_form(SPECS, {}), **entries}
    typed, errors = form.validate(SPECS, values)
    assert errors == {}
    command = form.format_command(form.to_argv(SPECS, values))
    parsed = form.parse_command(command, PARSER)
    # The CLI's own parser reads back exactly what the form holds, defaults included.
    knobs, other = PARSER.parse_dict(parsed)
    for spec in SPECS:
        owner = knobs if spec.owner is Knobs else other
        assert getattr(owner, spec.name) == typed[spec.name], spec.name
    assert form.values_to_form(SPECS, parsed) == form.values_to_form(SPECS, typed)


def test_long_commands_wrap_and_still_parse():
    values = {
        **form.values_to_form(SPECS, {}),
        "rank": "64",
        "scale": "2",
        "mode": "random",
        "steps": "5000",
        "targets": "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj",
    }
    command = form.format_command(form.to_argv(SPECS, values))
    assert "\\\n" in command
    assert form.parse_command(command, PARSER)["targets"][-1] == "down_proj"


@pytest.mark.parametrize(
    "field_name, raw, expected",
    [
        ("rank", "abc", "`rank` must be a whole number, got 'abc'"),
        ("rank", "2.5", "`rank` must be a whole number"),
        ("lr", "fast", "`lr` must be a number, got 'fast'"),
        ("mode", "cosine", "`mode` must be one of ['magnitude', 'random', 'zero']"),
        ("steps", "", "`steps` needs a value"),
    ],
)
def test_ill_typed_entries_get_a_message_naming_the_field(field_name, raw, expected):
    values = {**form.values_to_form(SPECS, {}), field_name: raw}
    _, errors = form.validate(SPECS, values)
    assert expected in errors[field_name]
    assert set(errors) == {field_name}


def test_out_of_range_values_show_the_dataclass_own_message_next_to_the_field():
    values = {**form.values_to_form(SPECS, {}), "rank": "0"}
    _, errors = form.validate(SPECS, values)
    assert errors == {"rank": "`rank` must be >= 1, got 0"}
    values = {**form.values_to_form(SPECS, {}), "ratio": "1.5"}
    assert form.validate(SPECS, values)[1] == {"ratio": "ratio must be in [0, 1), got 1.5"}


def test_a_message_naming_no_field_goes_to_the_changed_fields():
    values = {**form.values_to_form(SPECS, {}), "mode": "zero", "ratio": "0.5"}
    _, errors = form.validate(SPECS, values)
    assert set(errors) == {"mode", "ratio"}
    assert errors["mode"] == "a zero reset takes no pruning fraction"


def test_pasted_command_with_unknown_option_or_bad_value_is_a_message_not_an_exit():
    with pytest.raises(ValueError, match="Unknown option"):
        form.parse_command("hf-pept train --rank 4 --bogus 1", PARSER)
    with pytest.raises(ValueError, match="invalid"):
        form.parse_command("hf-pept train --rank four", PARSER)
    with pytest.raises(ValueError, match="Cannot read"):
        form.parse_command("hf-pept train --name 'unclosed", PARSER)


def test_a_possessive_does_not_name_a_field():
    assert form._fields_named("lr must be > 0 (or empty for the method's default)", ["lr", "method"]) == ["lr"]
