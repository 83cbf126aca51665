"""Make transformers' stock ``optim="galore_*"`` names build our optimizers.

The surface touched in transformers (checked by ``test_registration_surface_of_transformers`` in
``tests/galore/test_galore_trainer.py``):

* ``transformers.trainer_optimizer._OPTIMIZER_HANDLERS`` — the dict ``Trainer.get_optimizer_cls_and_kwargs`` looks
  ``args.optim`` up in. The Trainer imports the dict object itself, so replacing the six GaLore entries in place is
  all it takes.
* ``transformers.trainer.DEFAULT_CALLBACKS`` — gets :class:`LayerwiseGradNormCallback` (a no-op unless the optimizer
  is layer-wise GaLore), so layer-wise runs log their real gradient norm.

Unlike the stock handler, ours passes ``adam_beta1/2``, ``adam_epsilon`` and ``weight_decay`` (decoupled, on the
parameters the Trainer would decay: not biases or norms), validates ``optim_args``, and supports gradient
accumulation and checkpointing in the layer-wise forms.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from transformers import TrainerCallback

from ..events import unwrap_optimizer
from .adafactor import GaLoreAdafactor
from .adamw8bit import GaLoreAdamW8bit
from .config import GaLoreConfig
from .optimizer import GaLoreAdamW

SUPPORTED_TRANSFORMERS = ">=5.2,<6"

# name -> (optimizer class, layer-wise)
GALORE_OPTIMIZERS: dict[str, tuple[type, bool]] = {
    "galore_adamw": (GaLoreAdamW, False),
    "galore_adamw_8bit": (GaLoreAdamW8bit, False),
    "galore_adafactor": (GaLoreAdafactor, False),
    "galore_adamw_layerwise": (GaLoreAdamW, True),
    "galore_adamw_8bit_layerwise": (GaLoreAdamW8bit, True),
    "galore_adafactor_layerwise": (GaLoreAdafactor, True),
}

# The Trainer's rule for which parameters get weight decay (Trainer.get_decay_parameter_names).
_NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def _projectable_weights(module: nn.Module) -> tuple[str, ...]:
    """The 2-D weights of ``module`` GaLore may project: an ``nn.Linear``'s ``weight``, or the weights a module
    lists in ``weight_names`` (a CoLA linear's factors A and B)."""
    if isinstance(module, nn.Linear):
        return ("weight",)
    return tuple(getattr(module, "weight_names", ()))


def _target_weight_names(model: nn.Module, target_modules: Any, optim_name: str) -> set[str]:
    """Names of the linear weights matched by ``optim_target_modules`` (same matching as stock transformers)."""
    from transformers.trainer_utils import check_target_module_exists

    if target_modules is None:
        raise ValueError(
            f"optim={optim_name!r} needs `optim_target_modules` (a list of module-name regexes or 'all-linear') "
            "to choose the projected weights, e.g. optim_target_modules=[r'.*attn.*', r'.*mlp.*']"
        )
    if not isinstance(target_modules, (list, str)):
        raise ValueError(
            f"`optim_target_modules` must be a list of strings, a regex or 'all-linear', got {target_modules!r}"
        )
    all_linear = isinstance(target_modules, str) and target_modules.replace("_", "-") == "all-linear"
    names = set()
    for module_name, module in model.named_modules():
        weights = _projectable_weights(module)
        if weights and (all_linear or check_target_module_exists(target_modules, module_name)):
            names.update(f"{module_name}.{weight}" if module_name else weight for weight in weights)
    if not names:
        raise ValueError(
            f"optim_target_modules={target_modules!r} matched no linear module of the model (nn.Linear or CoLA)"
        )
    return names


def _decay_parameter_names(model: nn.Module) -> set[str]:
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [nn.LayerNorm], _NO_DECAY_PATTERNS))


def galore_param_groups(
    model: nn.Module, target_modules: Any, config: GaLoreConfig, weight_decay: float, optim_name: str = "galore"
) -> list[dict[str, Any]]:
    """Param groups: projected target weights, then the other decayed and non-decayed parameters (empty ones dropped)."""
    targets = _target_weight_names(model, target_modules, optim_name)
    decayed = _decay_parameter_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in targets], "weight_decay": weight_decay, **config.to_group()},
        {"params": [p for n, p in named if n not in targets and n in decayed], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in targets and n not in decayed], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def galore_optimizer_handler(ctx: Any) -> tuple[type, dict[str, Any]]:
    """transformers optimizer handler for the six ``galore_*`` names (an ``OptimizerContext`` in, class + kwargs out)."""
    args = ctx.args
    optim_name = getattr(args.optim, "value", args.optim)
    optimizer_cls, layerwise = GALORE_OPTIMIZERS[optim_name]
    config = GaLoreConfig.from_strings(dict(ctx.optim_args))
    if ctx.model is None:
        raise ValueError(f"optim={optim_name!r} needs the model to choose the projected weights")
    if layerwise:
        if args.max_grad_norm and args.max_grad_norm > 0:
            # The Trainer's own clip then finds every .grad already freed by the hooks: a no-op, not an error.
            warnings.warn(
                f"optim={optim_name!r} updates every layer during backward, before the global gradient norm is "
                f"known, so max_grad_norm={args.max_grad_norm} cannot clip it: training runs unclipped (set "
                "max_grad_norm=0 to silence this). The real norm is still logged as grad_norm.",
                stacklevel=2,
            )
        if args.world_size > 1:
            raise ValueError(
                f"optim={optim_name!r} cannot run distributed (world_size={args.world_size}): each layer would be "
                "updated from its local gradient before DDP averages it; use the non-layerwise name"
            )
    kwargs: dict[str, Any] = {"lr": args.learning_rate, "weight_decay": args.weight_decay, "layerwise": layerwise}
    if optimizer_cls is not GaLoreAdafactor:
        kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    kwargs["params"] = galore_param_groups(ctx.model, args.optim_target_modules, config, args.weight_decay, optim_name)
    return optimizer_cls, kwargs


class LayerwiseGradNormCallback(TrainerCallback):
    """Logs the real gradient norm of a layer-wise GaLore run.

    With layer-wise updates every ``.grad`` is already freed when the Trainer measures the norm, so it would log 0;
    this callback replaces that value (in the logs and in ``state.log_history``) by the norm the hooks measured.
    It does nothing for any other optimizer.
    """

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        inner = unwrap_optimizer(optimizer)
        grad_norm = getattr(inner, "last_grad_norm", None)
        if not getattr(inner, "layerwise", False) or grad_norm is None or not logs or "grad_norm" not in logs:
            return
        logs["grad_norm"] = grad_norm
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1]["grad_norm"] = grad_norm


def register_galore() -> None:
    """Point transformers' six ``galore_*`` optim names at our handler (idempotent)."""
    import transformers

    try:
        from transformers import trainer as trainer_module
        from transformers.trainer_optimizer import _OPTIMIZER_HANDLERS
        from transformers.training_args import OptimizerNames

        default_callbacks = trainer_module.DEFAULT_CALLBACKS
        names = [OptimizerNames(name) for name in GALORE_OPTIMIZERS]
    except (ImportError, AttributeError, ValueError) as err:
        raise ImportError(
            f"hf-pept registers its GaLore optimizers through transformers' optimizer handler table, which this "
            f"transformers ({transformers.__version__}) does not have ({err}). Supported: transformers"
            f"{SUPPORTED_TRANSFORMERS}; install one with `pip install 'transformers{SUPPORTED_TRANSFORMERS}'`."
        ) from err
    if not isinstance(_OPTIMIZER_HANDLERS, dict) or not isinstance(default_callbacks, list):
        raise ImportError(
            f"transformers {transformers.__version__} changed its optimizer handler table; hf-pept supports "
            f"transformers{SUPPORTED_TRANSFORMERS}"
        )
    for name in names:
        _OPTIMIZER_HANDLERS[name] = galore_optimizer_handler
    if LayerwiseGradNormCallback not in default_callbacks:
        default_callbacks.append(LayerwiseGradNormCallback)
