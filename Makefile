# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-slow bench install clean

$(BIN)/hardneg: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints.txt pins the CPU build of torch (an unpinned torch pulls a multi-GB CUDA build)
	# the ray extra too, so that the Ray engine's tests run (they start a local 2-CPU Ray)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,ray]"
	touch $@

install: $(BIN)/hardneg

demo: install  ## the main job: the default recipe, scaled down, on the SciFact sample in examples/
	$(BIN)/hardneg demo --out out/demo

test: install  ## the default test run (fast; full-corpus runs are marked slow)
	$(BIN)/python -m pytest -q

test-slow: install  ## full-SciFact reproduction tests (several minutes on 2 cores)
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/reproduce_scifact.py

clean:
	rm -rf $(VENV) out *.egg-info
