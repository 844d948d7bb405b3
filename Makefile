.PHONY: setup main test test-fast lint bench

# Set-up runs once and again only when pyproject.toml or scripts/setup.sh change (or .venv is removed);
# `make -B setup` forces it.
SETUP_STAMP := .venv/.setup-done
FAST_MARKERS := not slow and not server and not distributed and not bench

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml scripts/setup.sh
	./scripts/setup.sh

# The main job: the quick report re-measuring the article's claims (runs logged to mlruns/).
main: setup
	.venv/bin/lightning-wd report --quick --out report

# The whole suite (what CI runs): every test but the opt-in `heavy` ones.
test: setup
	./scripts/test.sh

# The fast lane while editing (well under 2 minutes): no slow fits, servers, extra processes or benchmarks.
test-fast: setup
	./scripts/test.sh -q -m "$(FAST_MARKERS)"

lint:
	.venv/bin/ruff check .

# All benchmark sections (about 30 minutes on 2 CPU cores; each prints [k/n] and its expected duration).
bench: setup
	.venv/bin/python -m benchmarks.run
