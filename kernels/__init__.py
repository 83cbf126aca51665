"""GPU kernels (Triton) for hf-pept, installed as ``hf_pept.kernels``.

Every op has a pure-PyTorch reference in its own module and a dispatcher that picks the Triton kernel on CUDA
and the reference elsewhere, or everywhere when ``HF_PEPT_DISABLE_KERNELS=1``.
"""

from .dispatch import kernels_enabled, triton_available

__all__ = ["kernels_enabled", "triton_available"]
