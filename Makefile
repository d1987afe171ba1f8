# The two commands of the course (see README.md). Both install what they need first.
VENV ?= .venv
export LLMLAB_VENV := $(VENV)

.PHONY: course test install bench

install:
	@bash scripts/install.sh

# Open the course: JupyterLab on notebooks/, embedded model ready (as root, e.g. in a container, JupyterLab wants
# --allow-root).
course: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Every test: unit tests, checks against transformers, and every notebook executed once (small budgets).
test: install
	LLMLAB_BUDGET=small $(VENV)/bin/python -m pytest

# Speed and memory figures (printed and stored under data/results/bench-cpu.json); not part of the tests.
bench: install
	$(VENV)/bin/python -m llmlab.bench
