from __future__ import annotations

from pathlib import Path

import pytest

from sgpo_data.config import load_recipe
from tests.helpers import tiny_overrides

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def tiny_recipe():
    return load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml", tiny_overrides())


@pytest.fixture
def servers():
    """Two OpenAI-compatible fault servers on loopback, one for the policy and one for the judge."""
    from tests.fault_server import FaultServer

    with FaultServer() as policy, FaultServer() as judge:
        yield policy, judge


@pytest.fixture(scope="session")
def transformers_on():
    """The shipped model on a device, loaded once per device for the session: `transformers_on("cuda")`."""
    from sgpo_data.backends import get_backend

    loaded = {}

    def on(device: str):
        if device not in loaded:
            loaded[device] = get_backend("transformers", None, {"device": device})
        return loaded[device]

    yield on
    for backend in loaded.values():
        backend.close()


@pytest.fixture(scope="session")
def smollm2(transformers_on):
    """The real shipped model on the CPU, loaded once for the session."""
    return transformers_on("cpu")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_generate_tests(metafunc):
    """A test that takes `device` runs on the CPU, and on CUDA in the GPU tier (`pytest -m gpu`), which is skipped
    where torch sees no CUDA device."""
    if "device" in metafunc.fixturenames:
        cuda = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.slow,
                                           pytest.mark.skipif(not _cuda(), reason="no CUDA device")])
        metafunc.parametrize("device", ["cpu", cuda])


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One real-model run through every stage: 4 prompts x 4 samples, short outputs."""
    from sgpo_data.stages import run_all

    out = tmp_path_factory.mktemp("run")
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml",
                         tiny_overrides(num_problems=4, num_samples=4, max_new_tokens=64))
    run_all(recipe, out)
    return out


# The fast tier (`make test-fast`, `pytest -m "not slow"`) leaves out every test that loads or builds a model (the
# shipped SmolLM2, a random transformers model, a PRM, the experiment's tiny transformer), starts vLLM, or runs
# another process (the grader's math-verify workers, the CLI in a subprocess, Ray, accelerate). Everything else is
# fast, the fault server included: it is a thread of the test process. No fast test asserts on wall-clock time.
# A test is slow when it asks for one of these fixtures (they load the model, build one, or run a stage, whose
# grader starts its workers), when its module is listed here (each of its tests runs stages), or by its own mark.
SLOW_FIXTURES = {
    "smollm2", "transformers_on", "pipeline_run", "exported", "demo",  # the shipped model
    "vllm_server", "vllm_run",  # vLLM
    "shipped_tokenizer",  # may convert the shipped GGUF (loads the model) on a fresh machine
    "prm_path", "tiny",  # tiny random models built for the PRM judge and the trainer
}
SLOW_MODULES = {"test_pipeline", "test_faults", "test_executors"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
