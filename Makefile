# The README's two commands: `make demo` (set-up + the main job) and `make test` (set-up + the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Data root: $EDGEFASHION_DATA if set; else ../shared/data when it lies beside the checkout (the project's
# development machines and CI); else the user's cache, where commands download what they need.
EDGEFASHION_DATA ?= $(if $(wildcard ../shared/data/fashion-mnist),$(abspath ../shared/data),$(HOME)/.cache/edgefashion)
export EDGEFASHION_DATA

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/edgefashion train --model cnn4 --data fashion-mnist --epochs 3

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
