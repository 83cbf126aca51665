"""ReLoRA tests: registration on import, one CPU thread."""

import pytest
import torch

import hf_pept.relora  # noqa: F401  (registers ReLoRA with peft and the Trainer)


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    # Tiny matmuls on a busy 2-core machine: OpenMP threads spinning against each other make them ~100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
