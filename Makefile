# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Both create .venv on first use and are quick once it is up to date.
# `make demo` takes under ten minutes on a 2-core CPU (5 min 6 s to 9 min 6 s, by machine and day), `make test` about twelve (tests about 10 min: a file per worker, four workers).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedgan demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q -n 4 --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/data_throughput.py
	$(VENV)/bin/python benchmarks/grade_signal.py
	$(VENV)/bin/python benchmarks/train_throughput.py
	$(VENV)/bin/python benchmarks/dp_step.py
	$(VENV)/bin/python benchmarks/federation_throughput.py
	$(VENV)/bin/python benchmarks/privacy_tradeoff.py
	$(VENV)/bin/python benchmarks/faults.py

clean:
	rm -rf $(VENV) runs .pytest_cache
