"""The method table: every training method of hf-pept, declared once.

Each :class:`Method` holds what a user needs to choose it and what the package needs to run it: its family and
paper, the config dataclass of its knobs and the option groups that fill it, how it is built (a peft wrapper for a
tuner, ``TrainingArguments`` entries for an optimizer), the stock entry point a Hugging Face user types, its
optimizer-state layout for :mod:`hf_pept.memory`, its default learning rate and rank per model size, and whether
``hf-pept compare`` runs it. The ``--method`` choices and option groups of ``hf-pept train``, the app's form,
``hf-pept compare``, ``hf_pept.memory.estimate`` and ``hf-pept methods`` all read :data:`METHODS`; nothing else
lists methods.

Adding a method = its folder (config, implementation, an option group mirrored from the config) + one entry here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .cola.arguments import CoLAArguments
from .cola.config import CoLAConfig
from .cola.memory import cola_activation_bytes, cola_model_config, cola_parameter_shapes
from .crnet.arguments import CRNetArguments
from .crnet.config import CRNetConfig
from .crnet.memory import crnet_activation_bytes, crnet_model_config, crnet_parameter_shapes
from .galore.arguments import GaLoreArguments
from .galore.config import GaLoreConfig
from .knobs import LLAMA_LINEAR_MODULES, AdapterArguments, LowRankArguments
from .relora.arguments import ReLoRAArguments
from .relora.config import ReLoRAConfig
from .sst.arguments import SSTArguments
from .sst.config import SSTConfig
from .switchlora.arguments import SwitchLoRAArguments
from .switchlora.config import SwitchLoRAConfig

if TYPE_CHECKING:
    from .run_args import RunArguments

Family = Literal["baseline", "optimizer", "tuner", "architecture"]
FAMILIES: tuple[str, ...] = ("baseline", "optimizer", "tuner", "architecture")
# The parsed option groups of one run, by dataclass (``{GaLoreArguments: GaLoreArguments(...), ...}``).
OptionGroups = Mapping[type, Any]


@dataclass(frozen=True)
class Paper:
    title: str
    authors: str  # "Zhao et al. 2024"
    arxiv: str

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    def __str__(self) -> str:
        return f"{self.authors}, {self.title} (arXiv {self.arxiv})"


@dataclass(frozen=True)
class StateLayout:
    """What training keeps besides the weights, as :mod:`hf_pept.memory` counts it.

    ``kind``: ``full`` (every parameter trains with the base optimizer's state), ``adapter`` (frozen weights plus
    low-rank factors B, A of the targeted linears, and trainable copies of embeddings and head; state for what
    trains), ``galore`` (every parameter trains; targeted matrices with a side > r keep a projector and moments of
    the projected gradient). ``base``: the base optimizer's moments (``adamw``: M and V; ``adamw_8bit``: both in
    8 bits with a block-wise absmax; ``adafactor``: factored second moment, no first moment). ``layerwise``: each
    gradient is freed right after its layer's update, so at most one full gradient exists at a time.
    ``residual_norm``: one fp32 scalar per projected weight (Fira's limiter remembers the residual's last norm).
    ``candidate_pools``: per adapted m×n linear, C = min(m, n) candidate rows of A and C candidate columns of B
    (SwitchLoRA) plus a few counters per vector; host memory when the run's ``offload_candidates`` is on (its
    default), weights beside the factors otherwise.
    ``spectral`` (SST): each targeted m×n matrix is stored as U (m×k), Σ (k) and V (n×k), k = min(m, n), plus the
    int64 indices of its active and frozen triplets, instead of W (weights grow); Σ and r columns of U and of V train
    and hold state (state shrinks to the active part); embeddings and head as for ``adapter``.
    """

    kind: Literal["full", "adapter", "galore", "spectral"]
    base: Literal["adamw", "adamw_8bit", "adafactor"] = "adamw"
    layerwise: bool = False
    residual_norm: bool = False
    candidate_pools: bool = False


@dataclass(frozen=True)
class ArchitectureLayout:
    """How :mod:`hf_pept.memory` counts an architecture's own model (None in a method = the LLaMA of ``model``).

    ``model_config(model, vocab_size, seq_len, rank, **run_options)``: the config a run of ``model`` (a size, a
    local config or a config object) builds; ``parameter_shapes(config)``: every parameter as
    :class:`hf_pept.memory.ParamShape`, in ``named_parameters`` order; ``activation_bytes(config, batch_size,
    seq_len, bytes_per_value, gradient_checkpointing)``: the bytes kept for backward in one step.
    """

    model_config: Callable[..., Any]
    parameter_shapes: Callable[[Any], list]
    activation_bytes: Callable[..., int]


@dataclass(frozen=True)
class Method:
    """One training method: identity, paper, knobs, how it is built, and its defaults.

    ``make_config(method, run, groups, rank)`` returns the method's validated config (or None): called before any
    work starts, so a bad knob is refused in one line. ``build_model(method, run, config, vocab_size,
    max_position_embeddings)`` builds an architecture's model (None: the LLaMA of ``run.model``, as
    :func:`hf_pept.models.build_model`). ``wrap_model(method, model, config)`` applies a tuner;
    ``trainer_kwargs(method, config, groups)`` returns the ``TrainingArguments`` entries of an optimizer.
    ``compare_knobs(interval)`` gives the method's periodic knobs for a ``hf-pept compare`` budget whose events
    (merges, refreshes) come every ``interval`` steps. ``architecture`` tells :mod:`hf_pept.memory` how to count an
    architecture's model (its config, parameter shapes and activations).
    """

    name: str
    family: Family
    summary: str
    entry: str  # the stock transformers / peft entry point in a few words (``optim="galore_adamw"``)
    usage: str  # that entry point as a user types it
    state: StateLayout
    learning_rate: float  # peak learning rate of the papers' LLaMA runs
    paper: Paper | None = None
    config_class: type | None = None
    option_groups: tuple[type, ...] = ()
    rank_ratio: float | None = None  # default rank = rank_ratio · hidden size; None = not a low-rank method
    learning_rate_by_size: Mapping[str, float] = field(default_factory=dict)  # where a paper tunes per size
    in_compare: bool = True  # hf-pept compare runs it by default
    make_config: Callable[..., Any] | None = None
    build_model: Callable[..., Any] | None = None
    wrap_model: Callable[..., Any] | None = None
    trainer_kwargs: Callable[..., dict[str, Any]] | None = None
    compare_knobs: Callable[[int], list[str]] | None = None
    optim_name: str | None = None
    fixed_knobs: Mapping[str, Any] = field(default_factory=dict)  # config values this method always sets
    unsupported_knobs: tuple[str, ...] = ()  # config fields of its option groups this method refuses to change
    architecture: ArchitectureLayout | None = None

    @property
    def low_rank(self) -> bool:
        return self.rank_ratio is not None

    def default_learning_rate(self, model: str | None = None) -> float:
        return self.learning_rate_by_size.get(str(model).lower(), self.learning_rate)

    def default_rank(self, hidden_size: int) -> int | None:
        """``rank_ratio · hidden_size`` (the papers' r = d/4: 128 at 60M, 256 at 350M, 512 at 1B), at least 1."""
        if self.rank_ratio is None:
            return None
        return max(1, int(round(self.rank_ratio * hidden_size)))

    def knobs(self) -> list[tuple[str, list[tuple[str, Any, str]]]]:
        """``(group title, [(option, default, help), ...])`` of every option group this method reads; knobs the
        method fixes (Fira's ``fira``) are left out."""
        out = []
        for group in self.option_groups:
            renamed = getattr(group, "config_fields", {})
            entries = []
            for f in dataclasses.fields(group):
                if renamed.get(f.name, f.name) in (*self.fixed_knobs, *self.unsupported_knobs):
                    continue
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                entries.append((f.name, default, f.metadata.get("help", "")))
            out.append((group.section_title, entries))
        return out


# ---- builders -------------------------------------------------------------------------------------------------
def _mirrored_values(group: Any) -> dict[str, Any]:
    return {theirs: getattr(group, ours) for ours, theirs in type(group).config_fields.items()}


def _adapter_options(run: RunArguments, groups: OptionGroups, rank: int) -> dict[str, Any]:
    dropout = groups[AdapterArguments].lora_dropout
    if not 0.0 <= dropout < 1.0:  # peft's LoraConfig takes any value and fails in nn.Dropout mid-build
        raise ValueError(f"lora_dropout must be in [0, 1), got {dropout!r}")
    return {
        "r": rank,
        **_mirrored_values(groups[AdapterArguments]),
        "target_modules": list(groups[LowRankArguments].target_modules),
    }


def lora_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **_adapter_options(run, groups, rank))


def relora_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int) -> ReLoRAConfig:
    knobs = _mirrored_values(groups[ReLoRAArguments])
    return ReLoRAConfig(task_type="CAUSAL_LM", reinit_seed=run.seed, **_adapter_options(run, groups, rank), **knobs)


def switchlora_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int) -> SwitchLoRAConfig:
    return SwitchLoRAConfig(
        task_type="CAUSAL_LM",
        r=rank,
        target_modules=list(groups[LowRankArguments].target_modules),
        switch_seed=run.seed,
        **_mirrored_values(groups[SwitchLoRAArguments]),
    )


def sst_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int) -> SSTConfig:
    from .models import hidden_size

    width = hidden_size(run.model)
    if rank >= width:
        # Every linear layer of a LLaMA has min(out, in) = hidden size: r must leave frozen triplets.
        raise ValueError(
            f"rank {rank} must be smaller than min(out, in) = {width} of every decomposed layer of the "
            f"{run.model} model (its hidden size) for SST; e.g. --rank {max(1, width // 4)}"
        )
    knobs = _mirrored_values(groups[SSTArguments])
    return SSTConfig(
        task_type="CAUSAL_LM",
        r=rank,
        target_modules=list(groups[LowRankArguments].target_modules),
        sample_seed=run.seed,
        **knobs,
    )


def galore_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int) -> GaLoreConfig:
    asked = _mirrored_values(groups[GaLoreArguments])
    if asked.get("fira") and "fira" in method.unsupported_knobs:
        raise ValueError(f"fira needs an Adam-based GaLore method {fira_methods()}; got method {method.name!r}")
    return GaLoreConfig(rank=rank, seed=run.seed, **{**asked, **method.fixed_knobs})


def _embedding_module_names(model) -> list[str]:
    """Last name components of the input-embedding and output-head modules: they train fully under adapters."""
    targets = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if id(module) in targets})


def wrap_with_peft(method: Method, model, config):
    """``get_peft_model`` with the embeddings and output head fully trained beside the adapters, as when
    pre-training from scratch (Lialin et al. 2023, §4)."""
    from peft import get_peft_model

    config.modules_to_save = _embedding_module_names(model)
    return get_peft_model(model, config)


def galore_trainer_kwargs(method: Method, config: GaLoreConfig, groups: OptionGroups) -> dict[str, Any]:
    return {
        "optim": method.optim_name,
        "optim_target_modules": list(groups[LowRankArguments].target_modules),
        "optim_args": ",".join(f"{key}={value}" for key, value in dataclasses.asdict(config).items()),
    }


def cola_run_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int) -> CoLAConfig:
    """The run's :class:`CoLAConfig` (its rank, CoLA or CoLA-M, ``only_lr_act``), checked before any work."""
    from .models import DEFAULT_MAX_POSITION_EMBEDDINGS, cola_config

    low_rank = groups[LowRankArguments]
    if list(low_rank.target_modules) != LLAMA_LINEAR_MODULES:
        raise ValueError(
            f"{method.name} factorizes every attention and MLP linear {LLAMA_LINEAR_MODULES}; target_modules does "
            f"not apply to it (got {list(low_rank.target_modules)})"
        )
    cola_m = bool(method.fixed_knobs.get("cola_m", False))
    if cola_m and run.gradient_checkpointing:
        raise ValueError(
            "cola-m already recomputes every decoder layer in backward; drop --gradient_checkpointing, or use "
            "--method cola with it"
        )
    max_positions = max(run.seq_len, DEFAULT_MAX_POSITION_EMBEDDINGS)
    only_lr_act = groups[CoLAArguments].only_lr_act
    return cola_config(run.model, run.vocab_size, max_positions, rank=rank, cola_m=cola_m, only_lr_act=only_lr_act)


def build_cola_model(method: Method, run: RunArguments, config: CoLAConfig, vocab_size: int, max_positions: int):
    """``CoLAForCausalLM`` of the run's config at the tokenizer's vocabulary; a local CoLA folder with weights is
    loaded to continue pre-training."""
    import copy
    import os

    from .cola import CoLAForCausalLM

    config = copy.deepcopy(config)
    config.vocab_size = vocab_size
    config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    path = str(run.model)
    if os.path.isdir(path) and any(n.endswith(".safetensors") or n == "pytorch_model.bin" for n in os.listdir(path)):
        return CoLAForCausalLM.from_pretrained(path, config=config)
    return CoLAForCausalLM(config)


def crnet_run_config(method: Method, run: RunArguments, groups: OptionGroups, rank: int) -> CRNetConfig:
    """The run's :class:`CRNetConfig` (its rank, ``recompute``, ``checkpoint_every``), checked before any work."""
    from .models import DEFAULT_MAX_POSITION_EMBEDDINGS, crnet_config

    low_rank = groups[LowRankArguments]
    if list(low_rank.target_modules) != LLAMA_LINEAR_MODULES:
        raise ValueError(
            f"{method.name} rebuilds every attention and MLP projection {LLAMA_LINEAR_MODULES}; target_modules "
            f"does not apply to it (got {list(low_rank.target_modules)})"
        )
    if run.gradient_checkpointing:
        raise ValueError(
            "crnet's layers pass seven projection outputs on, so block-level --gradient_checkpointing does not "
            "apply; use --recompute true (CR-Net's own recomputation) instead"
        )
    options = groups[CRNetArguments]
    max_positions = max(run.seq_len, DEFAULT_MAX_POSITION_EMBEDDINGS)
    return crnet_config(
        run.model,
        run.vocab_size,
        max_positions,
        rank=rank,
        recompute=options.recompute,
        checkpoint_every=options.checkpoint_every,
    )


def build_crnet_model(method: Method, run: RunArguments, config: CRNetConfig, vocab_size: int, max_positions: int):
    """``CRNetForCausalLM`` of the run's config at the tokenizer's vocabulary; a local CR-Net folder with weights
    is loaded to continue pre-training."""
    import copy
    import os

    from .crnet import CRNetForCausalLM

    config = copy.deepcopy(config)
    config.vocab_size = vocab_size
    config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    path = str(run.model)
    if os.path.isdir(path) and any(n.endswith(".safetensors") or n == "pytorch_model.bin" for n in os.listdir(path)):
        return CRNetForCausalLM.from_pretrained(path, config=config)
    return CRNetForCausalLM(config)


def _relora_compare_knobs(interval: int) -> list[str]:
    # ReLoRA warm-starts full-rank for the first interval (Lialin et al. 2023, §3), then merges every interval.
    return [
        "--warm_start_steps", str(interval), "--relora_steps", str(interval),
        "--restart_warmup_steps", str(max(1, interval // 5)),
    ]  # fmt: skip


def _sst_compare_knobs(interval: int) -> list[str]:
    # The paper's proportions (Zhao et al. 2025, its IWSLT'14 setting): a 20-step warm-up in each 200-step
    # iteration; the round is the default d/r iterations (4 at r = d/4, so a re-SVD every two event intervals).
    iteration = max(2, interval // 2)
    return ["--iteration_steps", str(iteration), "--iteration_warmup_steps", str(max(1, iteration // 10))]


def _galore_compare_knobs(interval: int) -> list[str]:
    return ["--update_proj_gap", str(interval)]


# ---- the table ------------------------------------------------------------------------------------------------
LORA_PAPER = Paper("LoRA: Low-Rank Adaptation of Large Language Models", "Hu et al. 2021", "2106.09685")
RELORA_PAPER = Paper("ReLoRA: High-Rank Training Through Low-Rank Updates", "Lialin et al. 2023", "2307.05695")
SWITCHLORA_PAPER = Paper(
    "SwitchLoRA: Switched Low-Rank Adaptation Can Learn Full-Rank Information", "Zhou et al. 2024", "2406.06564"
)
GALORE_PAPER = Paper(
    "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", "Zhao et al. 2024", "2403.03507"
)
SST_PAPER = Paper(
    "Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural Networks",
    "Zhao et al. 2025",
    "2405.15481",
)
FIRA_PAPER = Paper(
    "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?", "Chen et al. 2024", "2410.01623"
)
COLA_PAPER = Paper(
    "CoLA: Compute-Efficient Pre-Training of LLMs via Low-Rank Activation", "Liu et al. 2025", "2502.10940"
)
CRNET_PAPER = Paper(
    "CR-Net: Scaling Parameter-Efficient Training with Cross-Layer Low-Rank Structure",
    "Kong et al. 2026",
    "2509.18993",
)
# Peak learning rates of the papers' LLaMA runs: 1e-3 for full-rank, LoRA and ReLoRA (Lialin et al. 2023, §4),
# 1e-2 for GaLore and Fira with scale α = 0.25 (Zhao et al. 2024, §5.1: the projected update is scaled down by α),
# 2e-2 for SwitchLoRA with s = 1/r (the authors' 350M script; their LoRA runs use 1e-2, full-rank 1e-3).
_ADAPTER_GROUPS = (LowRankArguments, AdapterArguments)
_GALORE_GROUPS = (LowRankArguments, GaLoreArguments)
_GALORE_USAGE = (
    'TrainingArguments(optim="{optim}", optim_target_modules=["attn", "mlp"], optim_args="rank=128,'
    'update_proj_gap=200,scale=0.25{extra}")'
)


def _galore(name: str, optim: str, base: str, summary: str, *, layerwise=False, in_compare=True, **extra) -> Method:
    fixed = extra.pop("fixed_knobs", {})
    usage_extra = "".join(f",{k}={str(v).lower()}" for k, v in fixed.items())
    return Method(
        name=name,
        family="optimizer",
        summary=summary,
        entry=f'TrainingArguments(optim="{optim}"' + (f', optim_args="{usage_extra[1:]}"' if fixed else "") + ")",
        usage=_GALORE_USAGE.format(optim=optim, extra=usage_extra),
        state=StateLayout("galore", base, layerwise, residual_norm=bool(fixed.get("fira"))),
        learning_rate=1e-2,
        config_class=GaLoreConfig,
        option_groups=_GALORE_GROUPS,
        rank_ratio=0.25,
        in_compare=in_compare,
        make_config=galore_config,
        trainer_kwargs=galore_trainer_kwargs,
        compare_knobs=_galore_compare_knobs,
        optim_name=optim,
        fixed_knobs=fixed,
        **extra,
    )


# CoLA's pre-training scripts: AdamW at 6e-3 (60M), 3e-3 (130M, 350M), 2e-3 (1B); the smaller sizes take 60M's.
_COLA_LEARNING_RATES = {"60m": 6e-3, "130m": 3e-3, "350m": 3e-3, "1b": 2e-3}


def _cola(name: str, summary: str, *, cola_m: bool, in_compare: bool) -> Method:
    config_call = "hf_pept.CoLAConfig(rank=128" + (", cola_m=True" if cola_m else "") + ", ...)"
    return Method(
        name=name,
        family="architecture",
        summary=summary,
        entry=f"AutoModelForCausalLM.from_config(hf_pept.CoLAConfig({'cola_m=True' if cola_m else ''}))",
        usage=f"AutoModelForCausalLM.from_config({config_call}); Trainer(model=model, ...)",
        state=StateLayout("full"),
        learning_rate=6e-3,
        paper=COLA_PAPER,
        config_class=CoLAConfig,
        option_groups=(LowRankArguments, CoLAArguments),
        rank_ratio=0.25,
        learning_rate_by_size=_COLA_LEARNING_RATES,
        in_compare=in_compare,
        make_config=cola_run_config,
        build_model=build_cola_model,
        fixed_knobs={"cola_m": cola_m},
        unsupported_knobs=("target_modules",),
        architecture=ArchitectureLayout(
            model_config=functools.partial(cola_model_config, cola_m=cola_m),
            parameter_shapes=cola_parameter_shapes,
            activation_bytes=cola_activation_bytes,
        ),
    )


_CRNET = Method(
    name="crnet",
    family="architecture",
    summary="LLaMA whose projections from layer 2 on are Y_l = sgn(β)(|β| + ε)·Y_{l−1} + X·A·B (the same projection's "
    "output one layer down plus a rank-r term), layer 1 full-rank, trained with plain AdamW; --recompute true "
    "rebuilds the outputs in backward by inverting that relation.",
    entry="AutoModelForCausalLM.from_config(hf_pept.CRNetConfig())",
    usage="AutoModelForCausalLM.from_config(hf_pept.CRNetConfig(rank=128, recompute=True, ...)); "
    "Trainer(model=model, ...)",
    state=StateLayout("full"),
    learning_rate=6e-3,
    paper=CRNET_PAPER,
    config_class=CRNetConfig,
    option_groups=(LowRankArguments, CRNetArguments),
    rank_ratio=0.25,
    # CR-Net's own learning rates are not in our sources: CoLA's tuned ones, the closest low-rank architecture
    # trained under the same protocol (our choice).
    learning_rate_by_size=_COLA_LEARNING_RATES,
    in_compare=True,
    make_config=crnet_run_config,
    build_model=build_crnet_model,
    unsupported_knobs=("target_modules",),
    architecture=ArchitectureLayout(
        model_config=crnet_model_config,
        parameter_shapes=crnet_parameter_shapes,
        activation_bytes=crnet_activation_bytes,
    ),
)


_TABLE: tuple[Method, ...] = (
    Method(
        name="full",
        family="baseline",
        summary="Full-rank AdamW: every parameter and its moments; the reference every method is measured against.",
        entry='TrainingArguments(optim="adamw_torch")',
        usage='TrainingArguments(optim="adamw_torch")',
        state=StateLayout("full"),
        learning_rate=1e-3,
        in_compare=True,
    ),
    Method(
        name="lora",
        family="tuner",
        summary="Frozen random weights plus a trained low-rank update s·B·A per linear (peft's LoRA).",
        entry="get_peft_model(model, peft.LoraConfig(...))",
        usage='get_peft_model(model, peft.LoraConfig(r=128, target_modules=["q_proj", ...]))',
        state=StateLayout("adapter"),
        learning_rate=1e-3,
        paper=LORA_PAPER,
        config_class=None,  # peft's LoraConfig, imported when a run is built
        option_groups=_ADAPTER_GROUPS,
        rank_ratio=0.25,
        in_compare=True,
        make_config=lora_config,
        wrap_model=wrap_with_peft,
    ),
    Method(
        name="relora",
        family="tuner",
        summary="LoRA that merges B·A into W and restarts every relora_steps (optimizer reset, jagged LR), so the "
        "total update reaches high rank.",
        entry="get_peft_model(model, hf_pept.ReLoRAConfig(...))",
        usage="get_peft_model(model, hf_pept.ReLoRAConfig(r=128, target_modules=[...], relora_steps=1000))",
        state=StateLayout("adapter"),
        learning_rate=1e-3,
        paper=RELORA_PAPER,
        config_class=ReLoRAConfig,
        option_groups=(*_ADAPTER_GROUPS, ReLoRAArguments),
        rank_ratio=0.25,
        in_compare=True,
        make_config=relora_config,
        wrap_model=wrap_with_peft,
        compare_knobs=_relora_compare_knobs,
    ),
    Method(
        name="switchlora",
        family="tuner",
        summary="LoRA whose single rows of A / columns of B are swapped for candidate vectors (often early, rarely "
        "later), each swap folded into W; the counterpart is frozen and its optimizer state restarts.",
        entry="get_peft_model(model, hf_pept.SwitchLoRAConfig(...))",
        usage="get_peft_model(model, hf_pept.SwitchLoRAConfig(r=128, switch_interval=40, switch_descent_rate=0.1))",
        state=StateLayout("adapter", candidate_pools=True),
        learning_rate=2e-2,
        paper=SWITCHLORA_PAPER,
        config_class=SwitchLoRAConfig,
        option_groups=(LowRankArguments, SwitchLoRAArguments),
        rank_ratio=0.25,
        in_compare=True,
        make_config=switchlora_config,
        wrap_model=wrap_with_peft,
        # No compare_knobs: the descent is already relative to max_steps, and interval₀ and N are counted in
        # Adam steps (N warms restarted moments up, interval₀ > 2N), which a shorter run does not change.
    ),
    Method(
        name="sst",
        family="tuner",
        summary="Each linear W becomes U·diag(Σ)·Vᵀ from its SVD: Σ trains every step, r sampled singular vectors of "
        "U and V per iteration (re-SVD every round), so the update reaches full rank with state for the active part "
        "only; U, Σ, V are stored instead of W.",
        entry="get_peft_model(model, hf_pept.SSTConfig(...))",
        usage="get_peft_model(model, hf_pept.SSTConfig(r=64, target_modules=[...], iteration_steps=200))",
        state=StateLayout("spectral"),
        learning_rate=1e-3,  # as LoRA and ReLoRA here; the paper's LLaMA learning rate was not retrieved
        paper=SST_PAPER,
        config_class=SSTConfig,
        option_groups=(LowRankArguments, SSTArguments),
        rank_ratio=0.25,
        in_compare=True,
        make_config=sst_config,
        wrap_model=wrap_with_peft,
        compare_knobs=_sst_compare_knobs,
    ),
    _galore(
        "galore",
        "galore_adamw",
        "adamw",
        "AdamW on the gradient projected to rank r (R = PᵀG), P refreshed from its SVD every update_proj_gap steps.",
        paper=GALORE_PAPER,
        in_compare=True,
    ),
    _galore(
        "galore-8bit",
        "galore_adamw_8bit",
        "adamw_8bit",
        "GaLore with 8-bit AdamW moments (bitsandbytes' block-wise quantization; fp32 fallback without it).",
        paper=GALORE_PAPER,
    ),
    _galore(
        "galore-layerwise",
        "galore_adamw_layerwise",
        "adamw",
        "GaLore AdamW updating each weight inside backward and freeing its gradient (one full gradient at a time).",
        layerwise=True,
        paper=GALORE_PAPER,
    ),
    _galore(
        "galore-adafactor",
        "galore_adafactor",
        "adafactor",
        "GaLore on Adafactor: factored second moment of the projected gradient, no first moment.",
        paper=GALORE_PAPER,
        unsupported_knobs=("fira", "fira_limiter"),  # Fira scales by an Adam-style ψ(R); Adafactor has none
    ),
    _galore(
        "fira",
        "galore_adamw",
        "adamw",
        "GaLore AdamW plus the gradient outside the subspace, scaled by ‖ψ(R)‖/‖R‖ with a norm-growth limiter: "
        "full-rank updates with GaLore's state.",
        paper=FIRA_PAPER,
        fixed_knobs={"fira": True},
    ),
    _cola(
        "cola",
        "LLaMA with every attention/MLP linear W replaced by the auto-encoder B·σ(A·x) of rank r, trained from "
        "scratch with plain AdamW: about half the parameters and FLOPs of the LLaMA it replaces.",
        cola_m=False,
        in_compare=True,
    ),
    _cola(
        "cola-m",
        "CoLA that keeps only each layer's input and its r-dimensional activations A·x for backward and recomputes "
        "the rest: the same model, outputs and gradients with less activation memory.",
        cola_m=True,
        in_compare=True,
    ),
    _CRNET,
)

METHODS: dict[str, Method] = {method.name: method for method in _TABLE}


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def get(name: str) -> Method:
    """The method called ``name``; a ``ValueError`` naming the valid ones otherwise."""
    try:
        return METHODS[str(name)]
    except KeyError:
        raise ValueError(f"method {name!r} is not one of {list(METHODS)}") from None


def compare_methods() -> tuple[str, ...]:
    """The methods ``hf-pept compare`` runs by default, full-rank first."""
    return tuple(name for name, method in METHODS.items() if method.in_compare)


def fira_methods() -> list[str]:
    """Methods where ``--fira`` is allowed: the Adam-based GaLore forms (Fira scales its residual by ‖ψ(R)‖/‖R‖)."""
    return [m.name for m in METHODS.values() if m.state.kind == "galore" and "fira" not in m.unsupported_knobs]


def option_groups() -> tuple[type, ...]:
    """Every method option group in table order (each once)."""
    seen: dict[type, None] = {}
    for method in METHODS.values():
        seen.update(dict.fromkeys(method.option_groups))
    return tuple(seen)


def group_methods(group: type) -> tuple[str, ...]:
    """The methods that read option group ``group``."""
    return tuple(name for name, method in METHODS.items() if group in method.option_groups)


def _knob_default(name: str, default: Any) -> str:
    if name == "rank" and default is None:
        return "hidden/4"
    if isinstance(default, list):
        return " ".join(map(str, default))
    return "(none)" if default is None else str(default)


def describe(method: Method) -> str:
    """The ``hf-pept methods`` entry of one method: what it is, its paper, its stock entry point, its knobs."""
    import textwrap

    lines = [
        f"{method.name}  [{method.family}]",
        *textwrap.wrap(method.summary, 110, initial_indent="  ", subsequent_indent="  "),
    ]
    lines.append(f"  paper:    {method.paper}, {method.paper.url}" if method.paper else "  paper:    (the baseline)")
    lines.append(f"  use:      {method.usage}")
    lines.append(f"  CLI:      hf-pept train --method {method.name}")
    by_size = "".join(f", {size}: {lr:g}" for size, lr in method.learning_rate_by_size.items())
    rank = f"; rank {method.rank_ratio:g} x hidden size" if method.rank_ratio is not None else ""
    lines.append(f"  defaults: learning rate {method.learning_rate:g}{by_size}{rank}")
    for title, knobs in method.knobs():
        lines.append(f"  {title}:")
        for name, default, help_text in knobs:
            lines.append(f"    --{name} (default {_knob_default(name, default)})")
            lines += textwrap.wrap(help_text, 106, initial_indent="        ", subsequent_indent="        ")
    return "\n".join(lines)


def format_table(names: list[str] | None = None) -> str:
    """``hf-pept methods``: a one-line overview per method, then each method's entry (:func:`describe`)."""
    chosen = [get(name) for name in names] if names else list(METHODS.values())
    width = max(len(m.name) for m in chosen)
    family_width = max(len(family) for family in FAMILIES)
    overview = [f"{'method':<{width}}  {'family':<{family_width}}  {'paper':<19}  stock entry point"]
    for m in chosen:
        paper = m.paper.authors if m.paper else "-"
        overview.append(f"{m.name:<{width}}  {m.family:<{family_width}}  {paper:<19}  {m.entry}")
    entries = "\n\n".join(describe(m) for m in chosen)
    return "\n".join(overview) + "\n\n" + entries


__all__ = [
    "ArchitectureLayout",
    "FAMILIES",
    "METHODS",
    "Method",
    "Paper",
    "StateLayout",
    "compare_methods",
    "describe",
    "fira_methods",
    "format_table",
    "get",
    "group_methods",
    "method_names",
    "option_groups",
]
