.PHONY: run test setup lint

run:   ## set up and start Clarion on embedded defaults
	@scripts/run.sh

test:  ## set up everything and run every test
	@scripts/test.sh

setup:
	@scripts/setup.sh --with-node

lint:
	.venv/bin/ruff check src tests bench examples deploy && .venv/bin/ruff format --check src tests bench examples deploy && .venv/bin/mypy
