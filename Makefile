# The two commands of the course (see README.md). Both install what they need first.
VENV ?= .venv
export LLMLAB_VENV := $(VENV)

.PHONY: course test install browser site bench

install:
	@bash scripts/install.sh

# Open the course: JupyterLab on notebooks/, embedded model ready (as root, e.g. in a container, JupyterLab wants
# --allow-root).
course: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Debian's chromium for the browser tests, when it is missing (scripts/install_chromium.sh says how, if it cannot).
browser:
	@bash scripts/install_chromium.sh

# Every test: unit tests, checks against transformers, and every notebook executed once (small budgets): in
# JupyterLab in chromium (tests/browser, which also builds the site in build/site), or by nbval without chromium.
test: install browser
	LLMLAB_BUDGET=small $(VENV)/bin/python -m pytest

# The static site again, from the notebooks the last browser run executed and saved (build/browser/notebooks).
site:
	$(VENV)/bin/python scripts/build_site.py

# Speed and memory figures (printed and stored under data/results/bench-cpu.json); not part of the tests.
bench: install
	$(VENV)/bin/python -m llmlab.bench
