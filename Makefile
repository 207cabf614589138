# `make demo` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt layers/common/requirements.txt | md5sum | cut -c1-8)

.PHONY: venv test lint demo up bench clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt layers/common/requirements.txt
	rm -rf $(VENV)
	$$(scripts/find-python) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	# The domain package (the Lambda layer's python/ folder) and the repo root on the venv's path,
	# as the layer puts it on Lambda's: scripts, the local stack and benchmarks import it as is.
	$(PY) -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "project.pth").write_text("$(CURDIR)/layers/common/python\n$(CURDIR)\n")'
	touch $@

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(PY) -m local.demo

up: venv
	$(PY) -m local.up

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .aws-sam

-include mk/tooling.mk
-include mk/local.mk

# Each invariant's mechanisms broken one at a time; the tests that guard them must fail (slow: not in `make test`).
.PHONY: mutants
mutants: venv
	$(PY) -m tests.mutants
