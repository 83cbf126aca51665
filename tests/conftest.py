import os

import torch

# Without CUDA, Triton can only run kernels in its CPU interpreter, and it reads TRITON_INTERPRET when it is first
# imported (its own standard-library functions are decorated then) and when each kernel is decorated. Other test
# modules import Triton indirectly at collection (bitsandbytes does), so the variable is set here, before anything
# else. It changes nothing outside tests/kernels: the dispatchers never send CPU tensors to Triton.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """hf_pept's cache (tokenizers, token blocks) in the session's temp folder, shared by every module that asks,
    so the built-in tokenizer is trained once per test session."""
    from hf_pept import data

    path = tmp_path_factory.getbasetemp() / "hf_pept_cache"
    previous = os.environ.get(data.CACHE_ENV)
    os.environ[data.CACHE_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(data.CACHE_ENV, None)
    else:
        os.environ[data.CACHE_ENV] = previous


@pytest.fixture
def one_cpu_thread():
    """Tiny models on a busy 2-core machine: OpenMP threads spinning against each other make small matmuls up to
    ~100x slower, so tests of tiny models run on one intra-op thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
