# The README's first two commands: `make demo` (the main job) and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: install demo test test-gpu methods app examples style quality bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	bash scripts/install.sh $(PY)
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hf-pept compare

test: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

methods: $(STAMP)
	$(VENV)/bin/hf-pept methods

# the Gradio app on http://127.0.0.1:7860 (installs its extras into .venv first)
app: $(STAMP)
	$(PY) -m pip install -q -e ".[app]"
	$(VENV)/bin/hf-pept app

# each example script for a few steps on the tiny model, in .venv
examples: $(STAMP)
	$(PY) examples/pretrain_galore.py --model tiny --max_steps 20
	$(PY) examples/pretrain_relora.py --model tiny --max_steps 20
	$(PY) examples/plain_pytorch_loop.py --model tiny --max_steps 20

style: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

quality: $(STAMP)
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/optimizer_step.py

clean:
	rm -rf $(VENV) build *.egg-info
