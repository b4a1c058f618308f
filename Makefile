# The README's two commands: `make demo` (set-up + the main job) and `make test` (set-up + the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Data root: $EDGEFASHION_DATA if set; else ../shared/data when it lies beside the checkout (the project's
# development machines and CI); else the user's cache, where commands download what they need.
EDGEFASHION_DATA ?= $(if $(wildcard ../shared/data/fashion-mnist),$(abspath ../shared/data),$(HOME)/.cache/edgefashion)
export EDGEFASHION_DATA

# The bundled model the demo runs: the clothing-photo model (export/default.json names the defaults).
DEMO_MODEL ?= export/resnet10-clothing-small/model.int8.onnx

.PHONY: setup setup-runtime demo test clean

# The runtime alone (no torch): what a Raspberry Pi installs.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,dev]"
	touch $@

setup-runtime: $(VENV)/.runtime
setup: $(VENV)/.installed

# With a display and a webcam: the live camera. Without: the simulated camera (labelled test images with
# camera-like changes), headless, which stops by itself and prints its summary.
demo: setup-runtime
	@if [ -n "$${DISPLAY:-}" ] && [ -e /dev/video0 ]; then \
		$(VENV)/bin/edgefashion camera --model $(DEMO_MODEL) --source 0; \
	else \
		echo "no display or no webcam: running the simulated camera (--source demo: the package's own test photos held up in front of real scenes) headless"; \
		$(VENV)/bin/edgefashion camera --model $(DEMO_MODEL) --source demo --headless --max-frames 500; \
	fi

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
