"""Plumbing shared by our peft tuners (ReLoRA, SwitchLoRA, SST): registering a tuner with peft, checking the peft
fields of its config, matching the modules it wraps, attaching its callback to ``transformers.Trainer``, saving the
base weights the tuner changes, refusing optimizers that cannot work with it, and the seeded random streams that keep
data-parallel ranks and resumed runs identical.

**peft.** peft's public ``register_peft_method`` fills its mappings (config class, tuner class, prefix) but requires
the name to be a member of the ``PeftType`` enum, which third-party methods cannot add through any API. We add the
one member the way ``enum`` itself stores members (``_member_map_``, ``_value2member_map_``, ``_member_names_``) and
verify the result through the enum's public behaviour; anything unexpected raises with the supported range.

**Trainer.** ``Trainer.__init__`` is wrapped once (:func:`install_trainer_hook`); after it runs, every registered
attacher (one per tuner) may add that tuner's callback through the public ``Trainer.add_callback``.
"""

from __future__ import annotations

import enum
import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import field

import torch
from torch import nn

SUPPORTED_PEFT = "peft>=0.21 (tested with 0.21.0 and 0.21.2)"
SUPPORTED_TRANSFORMERS = "transformers>=5.0,<6"
_HOOK_MARK = "_hf_pept_tuner_hook"
# Derive a stream from (seed, step) without collisions between nearby seeds and steps.
_SEED_STRIDE = 1_000_003

# ---- seeded streams -------------------------------------------------------------------------------------------


def derived_generator(seed: int, step: int, device: torch.device | str, stream: int = 0) -> torch.Generator:
    """A generator on ``device`` seeded from (seed, step, stream): same draws on every rank and after a resume."""
    generator = torch.Generator(device=device)
    generator.manual_seed(((seed * _SEED_STRIDE + step) * 4 + stream) % (2**63))
    return generator


# ---- configs --------------------------------------------------------------------------------------------------


def help_field(default, help: str):
    """A dataclass field with its ``--help`` text (``metadata["help"]``, as peft's and transformers' configs)."""
    return field(default=default, metadata={"help": help})


def exclude_modules_field(verb: str = "adapt"):
    return help_field(None, f"Module names or a regex of layers never to {verb}.")


def target_parameters_field(method: str):
    return help_field(None, f"Not supported by {method} (kept for peft's matching code); leave None.")


def bias_field(own_mode: str, layers: str = "adapted"):
    """``bias``: 'none', 'all', or ``own_mode`` (``"relora_only"``, ...: the biases of the tuner's layers)."""
    return help_field("none", f"Which biases train: 'none', 'all', or '{own_mode}' (biases of the {layers} layers).")


def modules_to_save_field():
    return help_field(
        None,
        "Modules trained fully and saved with the adapter, e.g. ['embed_tokens', 'lm_head'] when pre-training from "
        "scratch.",
    )


def finish_tuner_config(config, peft_type_name: str) -> None:
    """The common end of a tuner config's ``__post_init__``: its ``PeftType`` member, list targets as sets.

    peft keeps ``target_modules`` / ``exclude_modules`` as sets (as ``LoraConfig`` does); ``peft_type`` falls back to
    the plain name before the tuner is registered.
    """
    from peft.utils import PeftType

    config.peft_type = getattr(PeftType, peft_type_name, peft_type_name)
    if isinstance(config.target_modules, list):
        config.target_modules = set(config.target_modules)
    if isinstance(config.exclude_modules, list):
        config.exclude_modules = set(config.exclude_modules)


def check_bias(config, bias_modes: tuple[str, ...]) -> None:
    if config.bias not in bias_modes:
        raise ValueError(f"bias must be one of {bias_modes}, got {config.bias!r}")


def check_no_target_parameters(config, what: str) -> None:
    """``what`` is the tuner and its verb, e.g. ``"ReLoRA adapts"``: the tuners wrap linear modules only."""
    if config.target_parameters:
        raise ValueError(
            f"{what} linear modules only; target_parameters must be None, got {config.target_parameters!r}"
        )


def check_layer_filter(config, *, refuse_str_targets: bool = True) -> None:
    """``layers_to_transform`` / ``layers_pattern`` as peft's ``LoraConfig`` accepts them.

    With ``refuse_str_targets``, a str ``target_modules`` (one regex, or 'all-linear') refuses the layer filter:
    peft matches such a value without it, so the layers would be adapted all the same.
    """
    if refuse_str_targets and isinstance(config.target_modules, str):
        # LoraConfig refuses this with the same words.
        for name in ("layers_to_transform", "layers_pattern"):
            if getattr(config, name) is not None:
                raise ValueError(
                    f"`{name}` cannot be used when `target_modules` is a str (got {config.target_modules!r}): "
                    "list the module names, e.g. target_modules=['q_proj', 'v_proj'], or leave "
                    "target_modules=None to adapt every linear layer of the chosen layers"
                )
    if config.layers_pattern and config.layers_to_transform is None:
        raise ValueError("layers_pattern is only used with layers_to_transform; set both or neither")


def check_int(name: str, value, low: int) -> None:
    """``value`` is an ``int`` (not a ``bool``) and at least ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


# ---- matching modules -----------------------------------------------------------------------------------------

# peft's value of target_modules for every linear layer but the output head.
ALL_LINEAR = "all-linear"


def default_to_all_linear(peft_config):
    """``target_modules=None`` becomes ``'all-linear'`` (every linear layer but the output head); returns the config."""
    if peft_config.target_modules is None:
        peft_config.target_modules = ALL_LINEAR
    return peft_config


def linear_modules(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` in ``model`` except its output head, in module order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module is not head:
            yield name, module


def tuner_layers(model: nn.Module, layer_cls: type) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``layer_cls`` module in ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, layer_cls):
            yield name, module


def refuse_second_adapter(tuner, why: str) -> None:
    """Tuners that fold their adapter into the weights hold one: ``why`` says so, e.g. ``"ReLoRA trains ..."``."""
    if len(tuner.peft_config) > 1:
        raise ValueError(f"{why}; the model already has adapters {sorted(tuner.peft_config)}")


def linear_base(target: nn.Module, current_key: str, what: str) -> nn.Linear:
    """The ``nn.Linear`` under ``target`` (itself, or a peft layer's base layer); ``what`` is e.g. ``"ReLoRA adapts"``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    if not isinstance(base, nn.Linear):
        raise TypeError(
            f"{what} torch.nn.Linear layers only; {current_key!r} is a {type(base).__name__}. "
            "Narrow target_modules or add it to exclude_modules."
        )
    return base


# ---- low-rank linear layers ----------------------------------------------------------------------------------


class LowRankLinearMixin:
    """ΔW, peft's merge / unmerge and the forward y = W x + s·B (A x) of a tuner layer with LoRA-shaped factors.

    For a ``BaseTunerLayer`` whose ``adapter_layer_names`` are its (A, B) ``nn.ModuleDict``s of ``nn.Linear`` and
    which holds ``scaling`` per adapter and its input dropouts in the ``nn.ModuleDict`` named ``lowrank_dropout``.
    ``nn.Module`` has a ``forward`` of its own: a layer class sets ``forward = LowRankLinearMixin.lowrank_forward``.
    """

    lowrank_dropout: str

    def _lowrank_a(self) -> nn.ModuleDict:
        return getattr(self, self.adapter_layer_names[0])

    def _lowrank_b(self) -> nn.ModuleDict:
        return getattr(self, self.adapter_layer_names[1])

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """ΔW = s · B A (fp32)."""
        lora_a = self._lowrank_a()[adapter_name].weight.float()
        lora_b = self._lowrank_b()[adapter_name].weight.float()
        return self.scaling[adapter_name] * (lora_b @ lora_a)

    def broken_merge_message(self, adapter_name: str) -> str:
        """The error of a ``safe_merge`` whose result is not finite (peft's tuners' wording, word for word)."""
        return f"NaNs detected in the merged weights. The adapter {adapter_name} seems to be broken"

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """peft's merge (used by ``merge_and_unload``): W ← W + s·B A, the factors stay as they are."""
        from peft.tuners.tuners_utils import check_adapters_to_merge

        from .kernels.lora_merge import merge_lora_

        adapter_names = check_adapters_to_merge(self, adapter_names)
        weight = self.get_base_layer().weight
        factors_a, factors_b = self._lowrank_a(), self._lowrank_b()
        for name in adapter_names:
            if name not in factors_a:
                continue
            lora_a, lora_b = factors_a[name].weight, factors_b[name].weight
            with torch.no_grad():
                if safe_merge:
                    merged = weight.data.clone()
                    merge_lora_(merged, lora_a, lora_b, self.scaling[name])
                    if not torch.isfinite(merged).all():
                        raise ValueError(self.broken_merge_message(name))
                    weight.data.copy_(merged)
                else:
                    merge_lora_(weight.data, lora_a, lora_b, self.scaling[name])
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        from .kernels.lora_merge import merge_lora_

        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        weight = self.get_base_layer().weight
        factors_a, factors_b = self._lowrank_a(), self._lowrank_b()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in factors_a:
                with torch.no_grad():
                    merge_lora_(weight.data, factors_a[name].weight, factors_b[name].weight, -self.scaling[name])

    def add_scaled_update(self, result: torch.Tensor, update: torch.Tensor, scaling: float) -> torch.Tensor:
        """result + s·update in ``result``'s dtype; one op for the scale and the sum, no separate s·update tensor."""
        return torch.add(result, update.to(result.dtype), alpha=scaling)

    def lowrank_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        factors_a, factors_b = self._lowrank_a(), self._lowrank_b()
        dropouts = getattr(self, self.lowrank_dropout)
        for name in self.active_adapters:
            if name not in factors_a:
                continue
            lora_a, lora_b = factors_a[name], factors_b[name]
            x_adapter = self._cast_input_dtype(x, lora_a.weight.dtype)
            update = lora_b(lora_a(dropouts[name](x_adapter)))
            result = self.add_scaled_update(result, update, self.scaling[name])
        return result


# ---- finding the tuner ----------------------------------------------------------------------------------------


def find_tuner(model: nn.Module, tuner_cls: type) -> nn.Module | None:
    """The ``tuner_cls`` instance inside ``model`` (a ``PeftModel``, a wrapper of one, or itself), or None."""
    base_model = getattr(model, "base_model", None)
    if isinstance(base_model, tuner_cls):
        return base_model
    if isinstance(model, tuner_cls):
        return model
    for module in model.modules():
        if isinstance(module, tuner_cls):
            return module
    return None


# ---- saving ---------------------------------------------------------------------------------------------------


def base_weight_entries(model: nn.Module, layer_cls: type, state_dict: dict[str, torch.Tensor]) -> dict:
    """``{key: tensor}`` of the ``base_layer.weight`` of every ``layer_cls`` module in ``model``'s state dict.

    Tuners that change W during training (ReLoRA merges, SwitchLoRA switches) save these with the adapter; peft
    passes keys it does not remap straight through on load, so they land back on the base layers.
    """
    entries = {}
    for name, module in model.named_modules():
        if isinstance(module, layer_cls):
            name = name.removeprefix("_fsdp_wrapped_module.")
            key = f"{name}.base_layer.weight" if name else "base_layer.weight"
            if key in state_dict:
                entries[key] = state_dict[key]
    return entries


# ---- learning-rate multipliers --------------------------------------------------------------------------------

# transformers' lr_scheduler_types that are not a LambdaLR of the step (a multiplier cannot compose with them).
NOT_STEP_BASED_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")


def lr_scheduler_name(args) -> str:
    """``args.lr_scheduler_type`` (a ``SchedulerType`` or a str) as a lower-case str."""
    return str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)).lower()


class MultipliedLambda:
    """λ(t) · ``schedule.multiplier(t)`` as a ``LambdaLR`` lr_lambda; a tuner subclasses it under its own name.

    ``LambdaLR.state_dict`` saves each callable's ``__dict__``; keeping the wrapped function and the schedule in
    slots leaves that dict empty, so scheduler checkpoints stay loadable with ``weights_only=True``.
    """

    __slots__ = ("base", "schedule", "__dict__")

    def __init__(self, base, schedule):
        self.base = base
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        return self.base(step) * self.schedule.multiplier(step)


def wrap_lr_lambdas(lr_scheduler, wrapper: type, schedule, what: str, hint: str = "") -> None:
    """Wrap every lr_lambda of ``lr_scheduler`` (a ``LambdaLR``) in ``wrapper(fn, schedule)``, in place; idempotent.

    A lambda already wrapped by ``wrapper`` is re-wrapped from its base. The optimizer's current learning rates are
    left as the scheduler last set them, so attaching to a scheduler restored from a checkpoint changes nothing
    until its next ``step()``. ``what`` names the multiplier in the refusal of other schedulers, ``hint`` ends it.
    """
    from torch.optim.lr_scheduler import LambdaLR

    if not isinstance(lr_scheduler, LambdaLR):
        raise ValueError(
            f"{what} composes with LambdaLR schedules (every transformers lr_scheduler_type except "
            f"'reduce_lr_on_plateau' and 'greedy'); got {type(lr_scheduler).__name__}{hint}"
        )
    lr_scheduler.lr_lambdas = [
        wrapper(fn.base if isinstance(fn, wrapper) else fn, schedule) for fn in lr_scheduler.lr_lambdas
    ]


# ---- refusing what cannot work --------------------------------------------------------------------------------


def refuse_galore_optim(args, method: str) -> None:
    """GaLore projects full-rank gradients; a tuner trains low-rank factors: refuse the pair before training."""
    optim = str(getattr(args.optim, "value", args.optim)).lower()
    if "galore" in optim:
        raise ValueError(
            f"optim={args.optim!r} (GaLore) projects full-rank gradients, but a {method} model trains low-rank "
            f"factors: use a standard optimizer such as optim='adamw_torch' with {method}, or GaLore without {method}"
        )


# ---- peft registration ----------------------------------------------------------------------------------------


def _unsupported(method: str, reason: str) -> RuntimeError:
    import peft

    return RuntimeError(
        f"hf_pept cannot register {method} with peft {peft.__version__}: {reason}. Supported: {SUPPORTED_PEFT}."
    )


def add_peft_type(name: str):
    """Add ``name`` as a member of peft's ``PeftType`` (a ``str`` enum) and return it; idempotent."""
    from peft.utils import PeftType

    if name in PeftType.__members__:
        return PeftType[name]
    if not (issubclass(PeftType, str) and issubclass(PeftType, enum.Enum)):
        raise _unsupported(name, "PeftType is no longer a str Enum")
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    # Class attribute first (EnumType.__setattr__ refuses names already in the member map), then the maps.
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    if PeftType(name) is not member or PeftType[name] is not member or member not in list(PeftType):
        raise _unsupported(name, "adding a PeftType member did not take")
    return member


def register_peft_tuner(name: str, config_cls: type, model_cls: type) -> None:
    """``get_peft_model``, ``PeftModel.from_pretrained`` and ``save_pretrained`` accept ``config_cls``; idempotent.

    ``name`` is the ``PeftType`` member (upper case, e.g. ``"RELORA"``); ``model_cls.prefix`` names its parameters.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    try:
        from peft.utils import register_peft_method
    except ImportError as error:
        raise _unsupported(name, "peft.utils.register_peft_method is missing") from error
    peft_type = add_peft_type(name)
    if PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type) is model_cls:
        return
    register_peft_method(name=name.lower(), config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(name) is not config_cls:
        raise _unsupported(name, f"the config mapping does not resolve {name!r} after registration")


# ---- the Trainer hook -----------------------------------------------------------------------------------------

# (name, attach): attach(trainer) adds the tuner's callback when the trainer's model holds that tuner.
_ATTACHERS: dict[str, Callable] = {}


def add_trainer_attacher(name: str, attach: Callable) -> None:
    """Run ``attach(trainer)`` after every ``Trainer.__init__`` (one per tuner name; re-adding replaces it)."""
    _ATTACHERS[name] = attach


def install_trainer_hook() -> None:
    """Wrap ``Trainer.__init__`` once so that tuner models get their callbacks; idempotent.

    The wrapped surface is the smallest public one: ``Trainer.__init__`` runs unchanged, then each attacher uses the
    public ``Trainer.add_callback``. If a transformers release drops what the hook relies on, this raises instead of
    silently training plain LoRA.
    """
    from transformers import Trainer

    init = Trainer.__init__
    if getattr(init, _HOOK_MARK, False):
        return
    if not callable(getattr(Trainer, "add_callback", None)):
        raise RuntimeError(
            f"hf_pept cannot attach its tuners' callbacks to this transformers.Trainer (no Trainer.add_callback); "
            f"supported: {SUPPORTED_TRANSFORMERS}. Pass callbacks=[hf_pept.ReLoRACallback()] (or "
            "hf_pept.SwitchLoRACallback()) to your Trainer instead."
        )

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if not hasattr(self, "callback_handler"):
            raise RuntimeError(
                "hf_pept: Trainer.__init__ no longer sets callback_handler; tuner callbacks cannot attach "
                f"themselves. Supported: {SUPPORTED_TRANSFORMERS}; pass callbacks=[hf_pept.ReLoRACallback()] (or "
                "hf_pept.SwitchLoRACallback()) instead."
            )
        for attach in _ATTACHERS.values():
            attach(self)

    setattr(__init__, _HOOK_MARK, True)
    Trainer.__init__ = __init__


def attach_tuner_callback(trainer, find_model: Callable, callback_cls: type, check: Callable) -> bool:
    """Add a ``callback_cls()`` to ``trainer`` if ``find_model(trainer.model)`` finds the tuner and the trainer has
    none, after ``check(trainer.args, trainer.model)`` (which raises on settings that cannot work); returns if added."""
    model = getattr(trainer, "model", None)
    if model is None or find_model(model) is None or trainer_has_callback(trainer, callback_cls):
        return False
    check(trainer.args, model)
    trainer.add_callback(callback_cls())
    return True


def record_tuner_events(state, events, method: str, logger) -> None:
    """Append each ``{"event": name, ...}`` of ``events`` to ``state.log_history`` and log it at INFO level."""
    from .events import record_event

    for event in events:
        name = event.pop("event")
        record_event(state, name, **event)
        logger.info("%s %s at step %d: %s", method, name, state.global_step, event)


def trainer_has_callback(trainer, callback_cls: type) -> bool:
    return any(isinstance(cb, callback_cls) for cb in trainer.callback_handler.callbacks)
