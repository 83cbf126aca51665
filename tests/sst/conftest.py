"""SST tests: registration on import, one CPU thread."""

import pytest

import hf_pept.sst  # noqa: F401  (registers SST with peft and the Trainer)


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread):
    yield
