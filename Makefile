.PHONY: setup main test lint bench

setup:
	./scripts/setup.sh

# The main job: the quick report re-measuring the article's claims (runs logged to mlruns/).
main: setup
	.venv/bin/lightning-wd report --quick --out report

test: setup
	./scripts/test.sh

lint:
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python -m benchmarks.run
