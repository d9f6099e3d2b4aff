# The two commands of the README. Both create .venv on first use.
.PHONY: run demo test bench setup

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/nni-bio search examples/digits.yml

demo: setup
	.venv/bin/nni-bio demo

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python benchmarks/rule_overhead.py
