# Two entry points that work on a fresh checkout: `make demo` and `make test`.
# Both create .venv in the repository and install the package with the CPU torch pin.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rootlets demo -o demo_output

test: $(STAMP)
	$(BIN)/ruff check rootlets_task tests model_release benchmarks
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output
