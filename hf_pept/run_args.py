"""The options of ``hf-pept train``: one ``RunArguments`` dataclass plus one dataclass of knobs per method family.

``HfArgumentParser`` turns them into the command line (``--field_name``, help from ``metadata["help"]``); the Gradio
app builds its form from the same classes (:func:`method_sections` says which section applies to which method), so
a default or a help text lives here once. The method knobs mirror the fields of the method's own config
(:class:`~hf_pept.galore.GaLoreConfig`, :class:`~hf_pept.relora.ReLoRAConfig`): their defaults and help are read
from there, and the mirrored values are checked by those configs when a run starts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .galore.config import GaLoreConfig
from .relora.config import ReLoRAConfig

Method = Literal["full", "lora", "relora", "galore", "galore-8bit", "galore-layerwise", "galore-adafactor"]
METHODS: tuple[str, ...] = get_args(Method)
GALORE_METHODS = ("galore", "galore-8bit", "galore-layerwise", "galore-adafactor")
LOW_RANK_METHODS = ("lora", "relora", *GALORE_METHODS)
ADAPTER_METHODS = ("lora", "relora")
# The stock transformers optim name each GaLore method runs as (registered by ``import hf_pept``).
GALORE_OPTIM_NAMES = {
    "galore": "galore_adamw",
    "galore-8bit": "galore_adamw_8bit",
    "galore-layerwise": "galore_adamw_layerwise",
    "galore-adafactor": "galore_adafactor",
}
# Peak learning rates of the papers' LLaMA runs: 1e-3 for full-rank, LoRA and ReLoRA (Lialin et al. 2023, §4),
# 1e-2 for GaLore with scale α = 0.25 (Zhao et al. 2024, §5.1: the projected update is scaled down by α).
METHOD_LEARNING_RATES = {"full": 1e-3, "lora": 1e-3, "relora": 1e-3, **dict.fromkeys(GALORE_METHODS, 1e-2)}
LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


def _positive_int(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner} `{name}` must be an integer >= {low}, got {value!r}")


@dataclass
class RunArguments:
    """What to train, on what, for how long, and where the run folder goes."""

    method: Method = field(
        default="galore",
        metadata={
            "help": "Training method: full (full-rank AdamW), lora, relora, galore (GaLore AdamW), galore-8bit, "
            "galore-layerwise (per-layer updates during backward), galore-adafactor."
        },
    )
    model: str = field(
        default="tiny",
        metadata={
            "help": "Model: a LLaMA size (tiny, 20m, 60m, 130m, 350m, 1b), built from config with random weights, "
            "or a local model folder / config.json."
        },
    )
    dataset: str = field(
        default="builtin",
        metadata={
            "help": "Corpus: 'builtin' (the Python standard library's sources, no download), a local .txt/.jsonl "
            "file or folder, or a Hugging Face hub dataset 'repo[:config]' (needs `datasets`)."
        },
    )
    text_field: str = field(default="text", metadata={"help": "Field holding the text in .jsonl / hub records."})
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
            "help": "Peak learning rate; empty = the papers' value for the method (1e-3 full/lora/relora, 1e-2 "
            "GaLore with scale 0.25)."
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
    seed: int = field(default=42, metadata={"help": "Seed of the model initialisation, data order and methods."})
    precision: Literal["auto", "bf16", "fp32"] = field(
        default="auto",
        metadata={"help": "auto: bf16 mixed precision on a CUDA GPU that supports it, fp32 otherwise."},
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "auto: the CUDA GPU when there is one, else the CPU."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward (less memory, ~30 % slower)."}
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
        for name in ("vocab_size", "seq_len", "batch_size", "gradient_accumulation_steps", "max_steps"):
            _positive_int("RunArguments", name, getattr(self, name))
        for name in ("eval_steps", "save_steps", "save_total_limit", "seed"):
            _positive_int("RunArguments", name, getattr(self, name), allow_zero=True)
        _positive_int("RunArguments", "logging_steps", self.logging_steps)
        for name in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) is not None:
                _positive_int("RunArguments", name, getattr(self, name))
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate must be > 0 (or empty for the method's default), got {self.learning_rate}"
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
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else METHOD_LEARNING_RATES[self.method]

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_ratio * self.max_steps))

    @property
    def clip_norm(self) -> float:
        if self.max_grad_norm is not None:
            return self.max_grad_norm
        return 0.0 if self.method == "galore-layerwise" else 1.0


@dataclass
class LowRankArguments:
    """The rank and the layers every low-rank method shares, so "the same rank" means the same number."""

    rank: int = field(
        default=GaLoreConfig.rank,
        metadata={
            "help": "r: rank of the LoRA / ReLoRA factors B·A and of GaLore's projected gradient PᵀG (same r for a "
            "like-for-like comparison)."
        },
    )
    target_modules: list[str] = field(
        default_factory=lambda: list(LLAMA_LINEAR_MODULES),
        metadata={
            "help": "Linear layers made low-rank (module-name suffixes or regexes); embeddings, norms and the output "
            "head always train full-rank."
        },
    )

    def __post_init__(self):
        _positive_int("LowRankArguments", "rank", self.rank)
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if not self.target_modules:
            raise ValueError("target_modules must name at least one linear layer, e.g. ['q_proj', 'v_proj']")


def _mirrored(config_class: type, names: dict[str, str]) -> list[tuple[str, Any, Any]]:
    """``make_dataclass`` fields copying type, default and help of ``config_class``'s fields (renamed by ``names``:
    config field -> our field)."""
    hints = typing.get_type_hints(config_class)
    source = {f.name: f for f in dataclasses.fields(config_class)}
    out = []
    for config_name, our_name in names.items():
        original = source[config_name]
        default = original.default
        if default is dataclasses.MISSING:
            raise TypeError(f"{config_class.__name__}.{config_name} has no default to mirror")
        out.append((our_name, hints[config_name], field(default=default, metadata=dict(original.metadata))))
    return out


def _mirror_class(name: str, doc: str, config_class: type, names: dict[str, str]) -> type:
    cls = dataclasses.make_dataclass(name, _mirrored(config_class, names), namespace={"__doc__": doc})
    cls.__module__ = __name__
    cls.config_fields = {ours: theirs for theirs, ours in names.items()}  # our field name -> the config's
    return cls


AdapterArguments = _mirror_class(
    "AdapterArguments",
    "LoRA-style adapter knobs (LoRA and ReLoRA), mirrored from ReLoRAConfig.",
    ReLoRAConfig,
    {"lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"},
)

ReLoRAArguments = _mirror_class(
    "ReLoRAArguments",
    "ReLoRA's restart knobs (Lialin et al. 2023, §3), mirrored from ReLoRAConfig.",
    ReLoRAConfig,
    {
        "relora_steps": "relora_steps",
        "restart_warmup_steps": "restart_warmup_steps",
        "optimizer_reset": "optimizer_reset",
        "prune_ratio": "prune_ratio",
        "warm_start_steps": "warm_start_steps",
    },
)

GaLoreArguments = _mirror_class(
    "GaLoreArguments",
    "GaLore's projection knobs (Zhao et al. 2024, Algorithm 1), mirrored from GaLoreConfig.",
    GaLoreConfig,
    {
        "update_proj_gap": "update_proj_gap",
        "scale": "galore_scale",
        "proj_type": "proj_type",
        "proj_method": "proj_method",
        "oversampling": "oversampling",
        "power_iters": "power_iters",
        "fira": "fira",
        "fira_limiter": "fira_limiter",
    },
)

FIRA_METHODS = ("galore", "galore-8bit", "galore-layerwise")


def check_fira_method(method: str, fira: bool) -> None:
    """Fira scales its residual by an Adam-style update: refuse ``--fira`` with any other method."""
    if fira and method not in FIRA_METHODS:
        raise ValueError(f"fira needs an Adam-based GaLore method {list(FIRA_METHODS)}; got method {method!r}")


ARGUMENT_CLASSES: tuple[type, ...] = (
    RunArguments,
    LowRankArguments,
    AdapterArguments,
    ReLoRAArguments,
    GaLoreArguments,
)


def method_sections() -> list[tuple[str, type, tuple[str, ...]]]:
    """``(title, dataclass, methods it applies to)`` for each group of method knobs, in form order."""
    return [
        ("Low rank", LowRankArguments, LOW_RANK_METHODS),
        ("Adapters (LoRA, ReLoRA)", AdapterArguments, ADAPTER_METHODS),
        ("ReLoRA restarts", ReLoRAArguments, ("relora",)),
        ("GaLore projection", GaLoreArguments, GALORE_METHODS),
    ]


def parser():
    """The ``HfArgumentParser`` of ``hf-pept train`` (every dataclass of :data:`ARGUMENT_CLASSES`)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(ARGUMENT_CLASSES)


def parse_train_args(argv: list[str] | None = None) -> tuple:
    """``(run, low_rank, adapter, relora, galore)`` dataclass instances from command-line ``argv``."""
    return tuple(parser().parse_args_into_dataclasses(args=argv))


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
