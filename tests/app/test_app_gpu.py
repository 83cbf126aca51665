"""GPU panel: parsing nvidia-smi's CSV, including devices that report no utilisation."""

import pytest

from hf_pept.app import gpu


def test_parse_nvidia_smi_and_format():
    text = "0, NVIDIA H100 80GB HBM3, 1024, 81559, 37\n1, NVIDIA H100 80GB HBM3, 0, 81559, [N/A]\ngarbage\n"
    statuses = gpu.parse_nvidia_smi(text)
    assert statuses == [
        gpu.GpuStatus(0, "NVIDIA H100 80GB HBM3", 1024.0, 81559.0, 37.0),
        gpu.GpuStatus(1, "NVIDIA H100 80GB HBM3", 0.0, 81559.0, None),
    ]
    table = gpu.format_status(statuses)
    assert "1,024 / 81,559 (1 %) | 37 %" in table and "| n/a |" in table
    assert gpu.format_status([]) == "No CUDA device found."


@pytest.mark.gpu
def test_gpu_status_matches_torch_on_a_cuda_machine():
    import torch

    statuses = gpu.gpu_status()
    assert gpu.cuda_present() and len(statuses) == torch.cuda.device_count()
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    # nvidia-smi reports MiB of the whole board; torch the memory it can use: equal to within 2 %.
    assert abs(statuses[0].memory_total_mb - total_mb) / total_mb < 0.02
    assert 0 <= statuses[0].memory_used_mb <= statuses[0].memory_total_mb
