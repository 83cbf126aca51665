"""Helpers shared by the GPU benchmark scripts: the environment line and the optional galore-torch baseline."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import platform
import sys
import types

import torch


def environment() -> dict[str, str]:
    """Device, library versions and date: the header of every result file."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    import transformers

    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__,
        "triton": triton_version,
        "transformers": transformers.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def device_slug(env: dict[str, str]) -> str:
    return env["device"].replace("NVIDIA ", "").replace(" ", "_").lower()


def load_galore_torch_adamw():
    """galore-torch's ``AdamW`` class, or None where galore-torch is not installed.

    Its package ``__init__`` imports its 8-bit variant and with it bitsandbytes, which the GPU machine lacks; the
    AdamW module itself needs neither, so it is loaded without running that ``__init__``.
    """
    if "galore_torch" not in sys.modules:
        spec = importlib.util.find_spec("galore_torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        package = types.ModuleType("galore_torch")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["galore_torch"] = package
    try:
        return importlib.import_module("galore_torch.adamw").AdamW
    except Exception as error:  # the baseline is optional: report it and carry on
        print(f"galore-torch present but unusable: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def prefill_galore_torch_projectors(optimizer, projected, rank: int, update_proj_gap: int) -> None:
    """Give galore-torch orthonormal projectors and a step count off the refresh schedule (no SVD in the timing)."""
    from galore_torch.galore_projector import GaLoreProjector

    for p in projected:
        m, n = p.shape
        projector = GaLoreProjector(rank, update_proj_gap=update_proj_gap, scale=0.25, proj_type="std")
        if m >= n:  # galore-torch's 'std' projects the right side when m >= n: ortho_matrix is Vᴴ[:r] (r×n)
            projector.ortho_matrix = torch.linalg.qr(torch.randn(n, rank, device=p.device))[0].t().to(p.dtype)
        else:
            projector.ortho_matrix = torch.linalg.qr(torch.randn(m, rank, device=p.device))[0].to(p.dtype)
        optimizer.state[p]["step"] = 1
        optimizer.state[p]["projector"] = projector


def llama_matrices(hidden: int, inter: int, layers: int) -> list[tuple[int, int]]:
    """(out, in) of every GaLore-projected weight of a LLaMA: q, k, v, o, gate, up, down in each layer."""
    return [(hidden, hidden)] * 4 * layers + [(inter, hidden)] * 2 * layers + [(hidden, inter)] * layers


def write_csv(path: str, env: dict[str, str], rows: list[dict[str, object]]) -> None:
    import csv

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as handle:
        handle.write("".join(f"# {key}: {value}\n" for key, value in env.items()))
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
