# Beep: `make demo` runs the show on sensible defaults; `make test` runs every test.
# Both set up the machine first (Debian packages as root, a virtualenv in .venv).
PY := .venv/bin/python

.PHONY: setup demo rehearse test vm-test lint format bench soak cleanup doctor

setup: .venv/.setup-done

.venv/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: setup
	$(PY) -m beep_av show

rehearse: setup
	$(PY) -m beep_av rehearse

test: setup
	bash scripts/test.sh

vm-test: setup
	bash scripts/test.sh -m guest

lint: setup
	$(PY) -m ruff check beep_av tests benchmarks
	$(PY) -m ruff format --check beep_av tests benchmarks

format: setup
	$(PY) -m ruff format beep_av tests benchmarks

bench: setup
	$(PY) -m benchmarks.harness

soak: setup
	$(PY) -m benchmarks.soak $(if $(N),--count $(N),)

doctor: setup
	$(PY) -m beep_av doctor

cleanup: setup
	$(PY) -m beep_av cleanup
