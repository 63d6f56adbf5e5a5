# fairseq-prune: `make demo` (the main job) and `make test` (the test suite) are the two README commands.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONWARNINGS := ignore

.PHONY: setup test test-fast demo study bench clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q

# the inner loop: every test not marked slow (no fairseq-hydra-train runs, no end-to-end jobs)
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(PY) scripts/demo.py

# the study at convergence (hours across sessions, resumable: run it again to continue; README, docs/protocols.md);
# the former short sweep of every method at 2-3 targets: scripts/study.py --protocol finetuned
study: setup
	$(PY) scripts/study.py --protocol converged

# benchmarks that print numbers: inference speed (exported vs dense, wav2vec2-base size, eager PyTorch and
# onnxruntime), training overhead, and the latency budget's allocation against the MAC budget's (predicted and
# measured, mini and base size), and what keeping freed memory (glibc) does to CPU inference
bench: setup
	@mkdir -p results
	$(PY) benchmarks/bench_inference.py --json results/bench_inference.json
	$(PY) benchmarks/bench_training.py --json results/bench_training.json
	$(PY) benchmarks/bench_latency.py --json results/bench_latency.json
	$(PY) benchmarks/bench_allocator.py --json results/bench_allocator.json

clean:
	rm -rf results work
