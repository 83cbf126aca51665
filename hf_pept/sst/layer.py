"""The SST-decomposed linear layer and its autograd path (Zhao et al. 2025, arXiv 2405.15481, §4).

A targeted ``nn.Linear`` with weight W (m×n, m = out, n = in) is replaced by its thin SVD (§4.1, "SVD
initialisation", §4.3): W = U·diag(Σ)·Vᵀ with k = min(m, n), U m×k and V n×k with orthonormal columns, Σ ≥ 0. The
base weight is then emptied (a zero-element tensor): U, Σ and V are the layer's weights, so storing them costs
(m + n)·k + k values instead of m·n (2× W for a square matrix, 1.37× for 1024×2736).

**Time-sharing partition** (§4.5). Of the k singular triplets, r are *active*: their columns of U and V live in two
fixed-size trainable Parameters ``sst_U_active`` (m×r) and ``sst_V_active`` (n×r); the other k − r live in frozen
Parameters ``sst_U_frozen`` / ``sst_V_frozen`` (``requires_grad=False``; Parameters rather than buffers so that DDP
does not broadcast them at every forward and sharding treats them as weights). ``sst_active_index`` and
``sst_frozen_index`` say which triplet each column is; Σ (length k, ``sst_sigma``) is one trainable Parameter in
triplet order. Resampling swaps columns between the two partitions in place (:meth:`SSTLayer.swap_in`), so an
optimizer built once keeps referring to the same Parameter objects.

**Gradients** (§4.2). With G = ∂L/∂W = Σ_tokens (∂L/∂h)ᵀ x, the true gradients of W = Σᵢ Σᵢ·Uᵢ·Vᵢᵀ are

    ∂L/∂Σᵢ = Uᵢᵀ G Vᵢ,     ∂L/∂Uᵢ = Σᵢ · G Vᵢ,     ∂L/∂Vᵢ = Σᵢ · Gᵀ Uᵢ.

The paper's *enhanced gradient* drops the factor Σᵢ for the singular vectors, ∂L/∂Uᵢ := G Vᵢ and ∂L/∂Vᵢ := Gᵀ Uᵢ
(§4.2; its advantage is Appendix D), so that vectors with a small Σᵢ still move. Dividing the true gradient by Σᵢ
after the fact would blow up as Σᵢ → 0, hence the custom autograd function :class:`SpectralLinearFunction`.

**Where the paper is silent, our choices.** (1) The forward builds W = U·diag(Σ)·Vᵀ once per call and applies it as
a dense ``F.linear``; backward rebuilds W instead of keeping it, so the saved activations are the layer input only,
as for a plain linear (the paper does not say how its forward is evaluated). (2) Under autocast the product runs
in the autocast dtype as ``nn.Linear`` would; W is built in the parameters' dtype (fp32) and rounded once.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

_NORM_EPS = 1e-12


def spectral_weight(
    sigma: torch.Tensor,
    u_frozen: torch.Tensor,
    v_frozen: torch.Tensor,
    u_active: torch.Tensor,
    v_active: torch.Tensor,
    frozen_index: torch.Tensor,
    active_index: torch.Tensor,
) -> torch.Tensor:
    """W = U_f·diag(Σ_f)·V_fᵀ + U_a·diag(Σ_a)·V_aᵀ (m×n) in the parameters' dtype, Σ_f = Σ[frozen_index]."""
    weight = (u_active * sigma[active_index]) @ v_active.T
    if frozen_index.numel():
        weight = torch.addmm(weight, u_frozen * sigma[frozen_index], v_frozen.T)
    return weight


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class SpectralLinearFunction(torch.autograd.Function):
    """h = x·Wᵀ with W = U·diag(Σ)·Vᵀ split into its frozen and active partitions; gradients as in §4.2.

    Inputs: ``x`` (…, n), ``sigma`` (k), ``u_frozen`` (m×(k−r)), ``v_frozen`` (n×(k−r)), ``u_active`` (m×r),
    ``v_active`` (n×r), the index tensors of the partitions and ``enhanced`` (drop Σᵢ from ∂L/∂Uᵢ, ∂L/∂Vᵢ).
    Gradients: x and Σ always exact; U_a and V_a enhanced or exact; the frozen partitions get none.
    """

    @staticmethod
    def forward(ctx, x, sigma, u_frozen, v_frozen, u_active, v_active, frozen_index, active_index, enhanced):
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            weight = spectral_weight(sigma, u_frozen, v_frozen, u_active, v_active, frozen_index, active_index)
            x = x.to(dtype)
            out = F.linear(x, weight.to(dtype))
        ctx.save_for_backward(x, sigma, u_frozen, v_frozen, u_active, v_active)
        ctx.frozen_index, ctx.active_index, ctx.enhanced = frozen_index, active_index, enhanced
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, sigma, u_frozen, v_frozen, u_active, v_active = ctx.saved_tensors
        frozen_index, active_index = ctx.frozen_index, ctx.active_index
        needs = ctx.needs_input_grad
        grad_x = grad_sigma = grad_u = grad_v = None
        with torch.autocast(x.device.type, enabled=False):
            grad_out = grad_out.to(x.dtype)
            if needs[0]:
                weight = spectral_weight(sigma, u_frozen, v_frozen, u_active, v_active, frozen_index, active_index)
                grad_x = grad_out @ weight.to(x.dtype)
            if needs[1] or needs[4] or needs[5]:
                # G = ∂L/∂W (m×n), accumulated over every token, in the parameters' dtype.
                g = grad_out.reshape(-1, grad_out.shape[-1]).T @ x.reshape(-1, x.shape[-1])
                g = g.to(sigma.dtype)
                g_v = g @ v_active  # G·V_a (m×r)
                gt_u = g.T @ u_active  # Gᵀ·U_a (n×r)
                sigma_active = sigma[active_index]
                if needs[1]:
                    grad_sigma = torch.zeros_like(sigma)
                    grad_sigma[active_index] = (u_active * g_v).sum(0)  # Uᵢᵀ G Vᵢ
                    if frozen_index.numel():
                        grad_sigma[frozen_index] = (u_frozen * (g @ v_frozen)).sum(0)
                scale = 1.0 if ctx.enhanced else sigma_active
                grad_u = g_v * scale if needs[4] else None
                grad_v = gt_u * scale if needs[5] else None
        return grad_x, grad_sigma, None, None, grad_u, grad_v, None, None, None


class SSTLayer(BaseTunerLayer):
    """State of an SST-decomposed layer: per adapter name Σ, the active and frozen columns of U and V, and which
    singular triplet each column is. One adapter per model (the tuner refuses a second)."""

    adapter_layer_names = ("sst_sigma", "sst_U_active", "sst_V_active")
    other_param_names = ("sst_U_frozen", "sst_V_frozen", "sst_active_index", "sst_frozen_index", "r", "enhanced")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.enhanced: dict[str, bool] = {}
        self.sst_sigma = nn.ParameterDict({})
        self.sst_U_active = nn.ParameterDict({})
        self.sst_V_active = nn.ParameterDict({})
        self.sst_U_frozen = nn.ParameterDict({})
        self.sst_V_frozen = nn.ParameterDict({})
        self.sst_active_index = BufferDict({}, persistent=True)
        self.sst_frozen_index = BufferDict({}, persistent=True)
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"SST decomposes torch.nn.Linear layers only, got {type(base).__name__}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.kwargs = kwargs

    @property
    def rank_limit(self) -> int:
        """k = min(out, in): the number of singular triplets."""
        return min(self.in_features, self.out_features)

    @torch.no_grad()
    def update_layer(self, adapter_name: str, r: int, enhanced_gradient: bool) -> None:
        """Decompose the base weight (W = U·diag(Σ)·Vᵀ, thin SVD in fp32), make the first r triplets active (the
        tuner resamples them right after) and empty the base weight."""
        k = self.rank_limit
        if not 0 < r < k:
            raise ValueError(
                f"r must satisfy 0 < r < min(out, in) = {k} for a {self.out_features}×{self.in_features} layer, "
                f"got r={r}"
            )
        weight = self.get_base_layer().weight
        if weight.numel() == 0:
            raise ValueError("this layer's weight was already replaced by an SST decomposition")
        u, sigma, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
        dtype, device = weight.dtype, weight.device
        u, sigma, v = (t.to(device=device, dtype=dtype) for t in (u, sigma, vh.T))
        active = torch.arange(r, device=device)
        frozen = torch.arange(r, k, device=device)
        self.r[adapter_name] = r
        self.enhanced[adapter_name] = enhanced_gradient
        self.sst_sigma[adapter_name] = nn.Parameter(sigma.contiguous())
        self.sst_U_active[adapter_name] = nn.Parameter(u[:, active].contiguous())
        self.sst_V_active[adapter_name] = nn.Parameter(v[:, active].contiguous())
        self.sst_U_frozen[adapter_name] = nn.Parameter(u[:, frozen].contiguous(), requires_grad=False)
        self.sst_V_frozen[adapter_name] = nn.Parameter(v[:, frozen].contiguous(), requires_grad=False)
        self.sst_active_index[adapter_name] = active
        self.sst_frozen_index[adapter_name] = frozen
        self._empty_base_weight()
        self.set_adapter(self.active_adapters)

    def _empty_base_weight(self) -> None:
        base = self.get_base_layer()
        base.weight = nn.Parameter(base.weight.new_empty(0), requires_grad=False)

    # ---- the decomposition ----------------------------------------------------------------------------------------

    def partitions(self, adapter_name: str) -> tuple[torch.Tensor, ...]:
        """(Σ, U_f, V_f, U_a, V_a, frozen_index, active_index) of ``adapter_name``."""
        return (
            self.sst_sigma[adapter_name],
            self.sst_U_frozen[adapter_name],
            self.sst_V_frozen[adapter_name],
            self.sst_U_active[adapter_name],
            self.sst_V_active[adapter_name],
            self.sst_frozen_index[adapter_name],
            self.sst_active_index[adapter_name],
        )

    @torch.no_grad()
    def full_factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U m×k, Σ k, V n×k) in triplet order, fp32 copies."""
        sigma, u_f, v_f, u_a, v_a, frozen, active = self.partitions(adapter_name)
        k = sigma.numel()
        u = u_a.new_empty(self.out_features, k, dtype=torch.float32)
        v = v_a.new_empty(self.in_features, k, dtype=torch.float32)
        u[:, active], v[:, active] = u_a.float(), v_a.float()
        u[:, frozen], v[:, frozen] = u_f.float(), v_f.float()
        return u, sigma.detach().float().clone(), v

    @torch.no_grad()
    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The whole weight W = U·diag(Σ)·Vᵀ (fp32): SST has no separate base weight to add a delta to."""
        sigma, u_f, v_f, u_a, v_a, frozen, active = (t.detach() for t in self.partitions(adapter_name))
        return spectral_weight(sigma.float(), u_f.float(), v_f.float(), u_a.float(), v_a.float(), frozen, active)

    @torch.no_grad()
    def swap_in(self, adapter_name: str, new_active: torch.Tensor) -> int:
        """Make the triplets ``new_active`` (r distinct indices) the active ones, in place; returns how many changed.

        A triplet that stays active keeps its slot; each leaving column trades places with an entering one (slots
        paired in ascending order), so only the columns that change are copied.
        """
        sigma, u_f, v_f, u_a, v_a, frozen, active = self.partitions(adapter_name)
        new_active = new_active.to(active.device)
        if new_active.numel() != active.numel() or torch.unique(new_active).numel() != active.numel():
            raise ValueError(f"need {active.numel()} distinct triplet indices, got {new_active.tolist()}")
        leaving = (~torch.isin(active, new_active)).nonzero().squeeze(1)
        entering = torch.isin(frozen, new_active).nonzero().squeeze(1)
        if leaving.numel() != entering.numel():
            raise ValueError(f"indices {new_active.tolist()} are not all in 0..{sigma.numel() - 1}")
        if leaving.numel():
            for active_part, frozen_part in ((u_a, u_f), (v_a, v_f), (active, frozen)):
                outgoing = active_part[..., leaving].clone()
                active_part[..., leaving] = frozen_part[..., entering]
                frozen_part[..., entering] = outgoing
        return int(leaving.numel())

    @torch.no_grad()
    def resvd(self, adapter_name: str) -> float:
        """[U, Σ, Vᵀ] ← SVD(U·diag(Σ)·Vᵀ) (fp32), keeping which slots are active; index i then names the i-th
        largest singular triplet. Returns the orthogonality error max(|UᵀU − I|, |VᵀV − I|) before it."""
        sigma, u_f, v_f, u_a, v_a, frozen, active = self.partitions(adapter_name)
        u, s, v = self.full_factors(adapter_name)
        eye = torch.eye(s.numel(), device=u.device)
        error = max(float((u.T @ u - eye).abs().max()), float((v.T @ v - eye).abs().max()))
        new_u, new_s, new_vh = torch.linalg.svd((u * s) @ v.T, full_matrices=False)
        new_v = new_vh.T
        sigma.copy_(new_s)
        u_a.copy_(new_u[:, active])
        v_a.copy_(new_v[:, active])
        u_f.copy_(new_u[:, frozen])
        v_f.copy_(new_v[:, frozen])
        return error

    @torch.no_grad()
    def project(self, adapter_name: str) -> None:
        """After an optimizer step: Σ ← max(Σ, 0) and each active column of U and V back to unit norm."""
        sigma, _, _, u_a, v_a, _, _ = self.partitions(adapter_name)
        sigma.clamp_(min=0)
        for part in (u_a, v_a):
            part.div_(part.norm(dim=0, keepdim=True).clamp_min(_NORM_EPS))


class Linear(nn.Module, SSTLayer):
    """``nn.Linear`` replaced by its SST decomposition."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, r: int, enhanced_gradient: bool, **kwargs) -> None:
        super().__init__()
        SSTLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, enhanced_gradient)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Write W = U·diag(Σ)·Vᵀ into the base layer (used by ``merge_and_unload``, which then returns the plain
        ``nn.Linear``); U, Σ, V stay as they are."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        for name in adapter_names:
            if name not in self.sst_sigma:
                continue
            base = self.get_base_layer()
            weight = self.get_delta_weight(name)
            if safe_merge and not torch.isfinite(weight).all():
                # peft's tuners' wording, word for word
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            base.weight = nn.Parameter(weight.to(base.weight.dtype), requires_grad=False)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        self.merged_adapters.clear()
        self._empty_base_weight()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            raise RuntimeError(
                "SST replaced this layer's weight by its decomposition U·diag(Σ)·Vᵀ; there is no base weight to run "
                "with the adapter disabled. Use merge_and_unload() for a plain model."
            )
        base = self.get_base_layer()
        if self.merged:
            return base(x, *args, **kwargs)
        names = [name for name in self.active_adapters if name in self.sst_sigma]
        if not names:
            raise RuntimeError("this SST layer has no active adapter")
        name = names[0]
        out = SpectralLinearFunction.apply(x, *self.partitions(name), self.enhanced[name])
        if base.bias is not None:
            out = out + base.bias.to(out.dtype)
        return out

    def __repr__(self) -> str:
        return "sst." + super().__repr__()
