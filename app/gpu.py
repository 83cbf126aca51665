"""GPU panel data: memory used/total and utilisation per CUDA device.

Read with ``nvidia-smi`` so the app process itself never creates a CUDA context (that alone would take hundreds
of MB on the device the runs train on); without ``nvidia-smi`` it falls back to ``torch.cuda.mem_get_info``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

QUERY = "index,name,memory.used,memory.total,utilization.gpu"


@dataclass
class GpuStatus:
    index: int
    name: str
    memory_used_mb: float
    memory_total_mb: float
    utilization_percent: float | None


def cuda_present() -> bool:
    if shutil.which("nvidia-smi"):
        return True
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def parse_nvidia_smi(text: str) -> list[GpuStatus]:
    """Parse ``nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`` output."""
    found = []
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 5:
            continue
        index, name, used, total, util = parts
        try:
            utilization = float(util)
        except ValueError:  # "[N/A]" on some virtualised devices
            utilization = None
        try:
            found.append(GpuStatus(int(index), name, float(used), float(total), utilization))
        except ValueError:
            continue
    return found


def gpu_status() -> list[GpuStatus]:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            return parse_nvidia_smi(out)
        except (subprocess.SubprocessError, OSError):
            pass
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        found.append(GpuStatus(index, torch.cuda.get_device_name(index), (total - free) / 2**20, total / 2**20, None))
    return found


def format_status(statuses: list[GpuStatus]) -> str:
    if not statuses:
        return "No CUDA device found."
    lines = ["| GPU | name | memory used / total (MB) | utilisation |", "|---|---|---|---|"]
    for gpu in statuses:
        util = "n/a" if gpu.utilization_percent is None else f"{gpu.utilization_percent:.0f} %"
        lines.append(
            f"| {gpu.index} | {gpu.name} | {gpu.memory_used_mb:,.0f} / {gpu.memory_total_mb:,.0f} "
            f"({100 * gpu.memory_used_mb / max(gpu.memory_total_mb, 1):.0f} %) | {util} |"
        )
    return "\n".join(lines)
