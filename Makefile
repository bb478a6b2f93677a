# Two commands for a new user:  `make demo`  and  `make test`  (contributors: `make lint`).
# Both create the virtual environment (.venv, Python 3.11) when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= out/demo
STAMP   = $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ecqx-demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# ruff (pinned in the [dev] extra): pyflakes, pycodestyle errors, import order; config in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out build *.egg-info
