# The two commands of the README. Both create .venv on first use.
.PHONY: run demo study test bench setup docs

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/nni-bio search examples/digits.yml

demo: setup
	.venv/bin/nni-bio demo

study: setup
	.venv/bin/nni-bio study examples/studies/digits.yml --jobs 2 --report-dir results/digits

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python benchmarks/rule_overhead.py

docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -f docs/mkdocs.yml
