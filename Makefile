# The front door: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install speechsum into it first.
#
# torch is pinned in the same pip command as everything else: on a CPU-only machine an
# unpinned resolve of `lightning` pulls the multi-GB CUDA build of a newer torch.
# GPU users: `make install TORCH="torch==2.13.0 --index-url ..."` or install torch first.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install run test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "Python's venv module is missing: apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e '.[dev]'
	touch $@

## The main job. Until the full pipeline lands: build a small synthetic audio-instruction
## set and run the SFT stage on a tiny composed speech LLM, then predict on its test split.
## Outputs under runs/tiny-sft/ (the paths are in configs/sft_tiny.yaml).
run: install
	$(BIN)/speechsum toydata --out runs/tiny-sft/data --train 768
	rm -rf runs/tiny-sft/checkpoints
	$(BIN)/speechsum fit --config configs/sft_tiny.yaml
	$(BIN)/speechsum predict --config configs/sft_tiny.yaml --ckpt_path last
	$(BIN)/speechsum toyscore runs/tiny-sft/predictions.jsonl

test: install
	$(BIN)/python -m pytest -n 2 -q

lint: install
	$(BIN)/ruff check speechsum tests

clean:
	rm -rf $(VENV) runs lightning_logs
