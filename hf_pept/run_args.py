"""The options of ``hf-pept train``: one ``RunArguments`` dataclass plus the option groups of the methods.

``HfArgumentParser`` turns them into the command line (``--field_name``, help from ``metadata["help"]``); the Gradio
app builds its form from the same classes, so a default or a help text lives here once. Which option groups exist
and which method reads which comes from the method table (:mod:`hf_pept.methods`); a method's own knobs are
mirrored from its config (:class:`~hf_pept.galore.GaLoreConfig`, :class:`~hf_pept.relora.ReLoRAConfig`) and checked
by it in :func:`prepare`, before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from . import methods as method_table
from .cola.arguments import CoLAArguments
from .crnet.arguments import CRNetArguments
from .data import STREAM_EVAL_DOCUMENTS, check_dataset
from .galore.arguments import GaLoreArguments
from .knobs import LLAMA_LINEAR_MODULES, AdapterArguments, LowRankArguments
from .knobs import check_positive_int as _positive_int
from .models import MODEL_SIZES, check_model, hidden_size, is_model_size
from .relora.arguments import ReLoRAArguments

METHODS: tuple[str, ...] = method_table.method_names()
Method = Literal[METHODS]  # type: ignore[valid-type]  (the choices of --method, from the method table)
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunArguments:
    """What to train, on what, for how long, and where the run folder goes."""

    method: Method = field(
        default="galore",
        metadata={"help": "Training method (hf-pept methods describes each): " + ", ".join(METHODS) + "."},
    )
    model: str = field(
        default="tiny",
        metadata={
            "help": f"Model: a LLaMA size ({', '.join(MODEL_SIZES)}), built from config with random weights, "
            "or a local model folder / config.json."
        },
    )
    dataset: str = field(
        default="builtin",
        metadata={
            "help": "Corpus: 'builtin' (the Python standard library's sources, no download), a local "
            ".txt/.jsonl/.json/.parquet file or folder, or a Hugging Face hub dataset 'owner/name[:config]'."
        },
    )
    text_field: str = field(
        default="text", metadata={"help": "Field holding the text in .jsonl / .json / .parquet / hub records."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the corpus (a hub dataset or a large local one): tokenize and pack on the fly in a "
            f"seeded shuffle buffer; the first {STREAM_EVAL_DOCUMENTS} documents are held out; a resumed run "
            "continues the stream exactly."
        },
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "A local tokenizer folder (or hub name); by default a BPE tokenizer is trained on the corpus "
            "and cached."
        },
    )
    vocab_size: int = field(default=8192, metadata={"help": "Vocabulary size of the trained BPE tokenizer."})
    seq_len: int = field(default=256, metadata={"help": "Tokens per training sequence (the papers use 256)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per device per micro-batch."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated into one optimizer step."}
    )
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps to train."})
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate; empty = the papers' value for the method (hf-pept methods lists them: 1e-3 "
            "full/lora/relora, 1e-2 GaLore with scale 0.25, CoLA 6e-3 at 60m down to 2e-3 at 1b)."
        },
    )
    embedding_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the input embeddings and the output head alone; empty = --learning_rate. "
            "For methods trained by the Trainer's own AdamW (not the GaLore family)."
        },
    )
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "transformers scheduler name (cosine, linear, constant, ...)."}
    )
    min_lr_ratio: float = field(
        default=0.1,
        metadata={"help": "Cosine schedule only: final learning rate as a fraction of the peak (papers: 0.1)."},
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of max_steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "Decoupled weight decay (AdamW)."})
    max_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Gradient clipping norm; empty = 1.0, or off for galore-layerwise (its updates happen before "
            "the global norm is known)."
        },
    )
    max_train_tokens: int | None = field(
        default=None,
        metadata={"help": "Use only the first N training tokens (repeated as epochs if max_steps needs more)."},
    )
    max_eval_tokens: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N held-out tokens; empty = the whole split."}
    )
    eval_steps: int = field(
        default=100, metadata={"help": "Evaluate held-out perplexity every N steps (0 = only at the end)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Write a metrics.jsonl record every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Save a checkpoint every N steps (0 = only at the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept in the run folder."})
    max_bad_steps: int = field(
        default=5,
        metadata={
            "help": "Updates with a non-finite gradient are skipped (weights and optimizer state untouched); after "
            "this many in a row the run stops as diverged."
        },
    )
    dead_steps: int = field(
        default=20,
        metadata={"help": "Stop the run as dead when the logged gradient norm is exactly 0 for this many steps."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the model initialisation, data order and methods."})
    precision: Literal["auto", "bf16", "fp32"] = field(
        default="auto",
        metadata={"help": "auto: bf16 mixed precision on a CUDA GPU that supports it, fp32 otherwise."},
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "auto: the CUDA GPU when there is one, else the CPU."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward (less memory, about 30 percent slower)."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Run folder; empty = runs/<method>-<model>-<date-time>."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Resume from this checkpoint folder, or 'last' for the run folder's latest checkpoint."},
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {list(METHODS)}")
        check_model(self.model)
        check_dataset(self.dataset)
        for name in ("vocab_size", "seq_len", "batch_size", "gradient_accumulation_steps", "max_steps"):
            _positive_int("RunArguments", name, getattr(self, name))
        for name in ("eval_steps", "save_steps", "save_total_limit", "seed"):
            _positive_int("RunArguments", name, getattr(self, name), allow_zero=True)
        for name in ("logging_steps", "max_bad_steps", "dead_steps"):
            _positive_int("RunArguments", name, getattr(self, name))
        for name in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) is not None:
                _positive_int("RunArguments", name, getattr(self, name))
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate must be > 0 (or empty for the method's default), got {self.learning_rate}"
            )
        if self.embedding_learning_rate is not None:
            if not self.embedding_learning_rate > 0:
                raise ValueError(
                    f"embedding_learning_rate must be > 0 (or empty for --learning_rate), got "
                    f"{self.embedding_learning_rate}"
                )
            if self.method_entry.optim_name is not None:
                takes = [m.name for m in method_table.METHODS.values() if m.optim_name is None]
                raise ValueError(
                    f"embedding_learning_rate is not available with --method {self.method} (its optimizer forms its "
                    f"own parameter groups); methods that take it: {', '.join(takes)}"
                )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {list(DEVICES)}")

    @property
    def method_entry(self) -> method_table.Method:
        return method_table.get(self.method)

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return self.method_entry.default_learning_rate(self.model)

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_ratio * self.max_steps))

    @property
    def clip_norm(self) -> float:
        if self.max_grad_norm is not None:
            return self.max_grad_norm
        return 0.0 if self.method_entry.state.layerwise else 1.0


FIRA_METHODS = tuple(method_table.fira_methods())
# The dataclasses of ``hf-pept train``, in ``--help`` and form order: the run's options, then each option group.
ARGUMENT_CLASSES: tuple[type, ...] = (RunArguments, *method_table.option_groups())


def check_fira_method(method: str, fira: bool) -> None:
    """Fira scales its residual by an Adam-style update: refuse ``--fira`` with any other method."""
    if fira and method not in FIRA_METHODS:
        raise ValueError(f"fira needs an Adam-based GaLore method {list(FIRA_METHODS)}; got method {method!r}")


def method_sections() -> list[tuple[str, type, tuple[str, ...]]]:
    """``(title, dataclass, methods it applies to)`` for each option group, in form order."""
    return [(group.section_title, group, method_table.group_methods(group)) for group in ARGUMENT_CLASSES[1:]]


@dataclass
class PreparedRun:
    """A run's options, checked: its method, the rank it trains at and its validated config (None for full-rank)."""

    run: RunArguments
    groups: dict[type, Any]
    method: method_table.Method
    rank: int | None
    config: Any


def groups_of(*instances: Any) -> dict[type, Any]:
    """``{class: instance}`` of the option groups, each missing one at its defaults."""
    given = {type(instance): instance for instance in instances if instance is not None}
    unknown = [cls.__name__ for cls in given if cls not in ARGUMENT_CLASSES]
    if unknown:
        raise TypeError(
            f"{unknown} are not option groups of hf-pept train; expected {[c.__name__ for c in ARGUMENT_CLASSES]}"
        )
    return {cls: given.get(cls) or cls() for cls in ARGUMENT_CLASSES}


def resolve_rank(run: RunArguments, low_rank: LowRankArguments) -> int | None:
    """``--rank``, or the method's default for the model (a quarter of its hidden size); None for full-rank."""
    method = run.method_entry
    if not method.low_rank:
        return None
    if low_rank.rank is not None:
        return low_rank.rank
    own = _architecture_rank(run.model) if method.family == "architecture" else None
    return own if own is not None else method.default_rank(hidden_size(run.model))


def _architecture_rank(model: str) -> int | None:
    """The rank a local CoLA / CR-Net config was saved with (its own, not hidden/4); None for a size or a LLaMA."""
    if is_model_size(model):
        return None
    from transformers import AutoConfig

    rank = getattr(AutoConfig.from_pretrained(model), "rank", None)
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


def prepare(run: RunArguments, *groups: Any) -> PreparedRun:
    """Check every option of a run before any work: the method's config is built here (a bad knob is a
    ``ValueError`` naming it), the rank resolved from the model."""
    by_class = groups_of(run, *groups)
    method = run.method_entry
    rank = resolve_rank(run, by_class[LowRankArguments])
    config = method.make_config(method, run, by_class, rank) if method.make_config else None
    return PreparedRun(run, by_class, method, rank, config)


class TrainArgumentParser(argparse.ArgumentParser):
    """Says what is wrong in one line (``hf-pept train: error: ...``) and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser():
    """The ``HfArgumentParser`` of ``hf-pept train`` (every dataclass of :data:`ARGUMENT_CLASSES`)."""
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser, TrainArgumentParser):
        pass

    built = _Parser(ARGUMENT_CLASSES, prog="hf-pept train", description="Pre-train one model as one run folder.")
    for action in built._actions:
        if action.help and "%(" not in action.help:
            action.help = action.help.replace("%", "%%")  # argparse formats help with %-interpolation
    return built


def parse_train_args(argv: list[str] | None = None) -> tuple:
    """The dataclass instances of :data:`ARGUMENT_CLASSES` (run first) from command-line ``argv``."""
    built = parser()
    *groups, remaining = built.parse_args_into_dataclasses(
        args=sys.argv[1:] if argv is None else argv, return_remaining_strings=True
    )
    if remaining:
        built.error(f"unrecognized arguments: {' '.join(remaining)}")
    return tuple(groups)


def to_argv(*instances: Any) -> list[str]:
    """The ``--field value`` options that reproduce ``instances`` (only values that differ from the default)."""
    argv: list[str] = []
    for instance in instances:
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if value == default:
                continue
            if isinstance(value, (list, tuple)):
                argv += [f"--{f.name}", *map(str, value)]
            elif value is None:
                continue
            else:
                argv += [f"--{f.name}", str(value)]
    return argv


__all__ = [
    "ARGUMENT_CLASSES",
    "AdapterArguments",
    "CoLAArguments",
    "CRNetArguments",
    "GaLoreArguments",
    "LLAMA_LINEAR_MODULES",
    "LowRankArguments",
    "METHODS",
    "PreparedRun",
    "ReLoRAArguments",
    "RunArguments",
    "groups_of",
    "method_sections",
    "parse_train_args",
    "parser",
    "prepare",
    "resolve_rank",
    "to_argv",
]
