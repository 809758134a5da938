# Entry points that work on a fresh checkout: `make demo`, `make test`, `make docs`.
# All create .venv in the repository and install the package with the CPU build of torch: torch alone comes first,
# from PyTorch's CPU wheel index (constraints.txt pins its +cpu build on Linux, so nothing can swap in the CUDA
# build from PyPI), then the package and the rest from PyPI. GPU machines: see docs/install.md.
PYTHON ?= python3
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test docs cli-doc lint clean clean-user-data

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt --extra-index-url $(TORCH_INDEX) torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rootlets demo -o demo_output

# the documentation site (strict: a broken link or page fails); tests/test_docs.py also runs every example in it
# docs/cli.md, generated from the argparse parsers (run it after changing a flag; the tests fail when it is stale)
cli-doc: $(STAMP)
	$(BIN)/python -m rootlets_task.cli.clidoc docs/cli.md

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

test: $(STAMP) docs
	$(BIN)/ruff check src tests model_release benchmarks
	$(BIN)/lint-imports  # the layers of docs/architecture.md and no import cycle (.importlinter)
	$(BIN)/mypy  # the package's types (mypy.ini)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests  # two workers (pytest-xdist); SLURM tests in one

clean:
	rm -rf $(VENV) demo_output site

# the models and caches the package installed into your user data and cache folders (see README)
clean-user-data: $(STAMP)
	$(BIN)/rootlets clean
