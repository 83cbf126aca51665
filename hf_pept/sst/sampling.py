"""Which singular vectors train in an iteration (Zhao et al. 2025, arXiv 2405.15481, §4.4 "SST balances exploitation
and exploration").

At the start of each iteration r of the k singular triplets of a layer are drawn *without replacement* from

    p(i) = ½ · (1/k + Σᵢ / Σⱼ Σⱼ)                                     ("mixed", the paper's distribution)

half uniform (every direction gets explored), half proportional to the singular value (the directions that carry
the weight get exploited more often); ``uniform`` is p(i) = 1/k. Drawing without replacement is successive sampling
(``torch.multinomial(p, r, replacement=False)``): each draw picks from the remaining indices with probability
proportional to p, so the probability of the ordered draw (i₁, …, i_r) is Π_t p(i_t) / (1 − Σ_{s<t} p(i_s)).
If every Σᵢ is 0 the mixed distribution falls back to uniform.
"""

from __future__ import annotations

import torch


def sampling_probabilities(sigma: torch.Tensor, mode: str = "mixed") -> torch.Tensor:
    """p(i) over the k triplets (fp64, sums to 1) for ``mode`` "mixed" or "uniform"."""
    sigma = sigma.detach().double().clamp_min(0)
    k = sigma.numel()
    uniform = torch.full_like(sigma, 1.0 / k)
    if mode == "uniform":
        return uniform
    if mode != "mixed":
        raise ValueError(f"sampling must be 'mixed' or 'uniform', got {mode!r}")
    total = sigma.sum()
    if total <= 0:
        return uniform
    return 0.5 * (uniform + sigma / total)


def sample_active(sigma: torch.Tensor, r: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """r distinct triplet indices drawn without replacement from :func:`sampling_probabilities`, sorted, on Σ's
    device. The draw runs on ``generator``'s device (the tuner uses a CPU generator, so CPU and GPU runs with the
    same Σ draw the same vectors)."""
    p = sampling_probabilities(sigma, mode).to(generator.device)
    drawn = torch.multinomial(p, r, replacement=False, generator=generator)
    return drawn.sort().values.to(sigma.device)
