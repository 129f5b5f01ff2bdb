# Beep: `make demo` runs the show on sensible defaults; `make test` runs every test.
# Both set up the machine first (Debian packages as root, a virtualenv in .venv).
PY := .venv/bin/python

.PHONY: setup setup-test demo rehearse test vm-test lint format bench soak cleanup doctor gif

# the show's packages only; `setup-test` adds the tests' and the guest test bed's
setup: .venv/.setup-done

.venv/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup-test: .venv/.setup-test-done

.venv/.setup-test-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh --test

demo: setup
	$(PY) -m beep_av show

rehearse: setup
	$(PY) -m beep_av rehearse

test: setup-test
	bash scripts/test.sh

vm-test: setup-test
	bash scripts/test.sh -m guest

lint: setup-test
	$(PY) -m ruff check beep_av tests benchmarks
	$(PY) -m ruff format --check beep_av tests benchmarks

format: setup-test
	$(PY) -m ruff format beep_av tests benchmarks

bench: setup-test
	$(PY) -m benchmarks.harness

soak: setup-test
	$(PY) -m benchmarks.soak $(if $(N),--count $(N),)

doctor: setup
	$(PY) -m beep_av doctor

cleanup: setup
	$(PY) -m beep_av cleanup

# the README's GIF: the shipped example show, rendered (under 2 MiB)
gif: setup
	$(PY) -m beep_av render example -o docs/example.gif
