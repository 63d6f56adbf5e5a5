# fairseq-prune: `make demo` (the main job) and `make test` (the test suite) are the two README commands.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONWARNINGS := ignore

.PHONY: setup test demo study bench clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf results work
