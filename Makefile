# `make demo` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt layers/common/requirements.txt | md5sum | cut -c1-8)

# The local DynamoDB (dynalite, pinned in local/package-lock.json), for `make up`, `make demo` and the tests.
STORE := local/node_modules/.installed

# The benchmark's peer: BullMQ (pinned in bench/bullmq/package-lock.json) on Debian's redis-server.
PEER := bench/bullmq/node_modules/.installed

.PHONY: venv store peer test lint demo up reset bench clean

venv: $(STAMP)

store: $(STORE)

$(STORE): local/package.json local/package-lock.json
	cd local && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(STAMP): requirements-dev.txt layers/common/requirements.txt
	rm -rf $(VENV)
	$$(scripts/find-python) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	# The domain package (the Lambda layer's python/ folder) and the repo root on the venv's path,
	# as the layer puts it on Lambda's: scripts, the local stack and benchmarks import it as is.
	$(PY) -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "project.pth").write_text("$(CURDIR)/layers/common/python\n$(CURDIR)\n")'
	touch $@

test: venv store
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .

demo: venv store
	$(PY) -m local.demo

up: venv store
	$(PY) -m local.up

peer: $(PEER)
	@command -v redis-server >/dev/null || { apt-get update && apt-get install -y redis-server; }

$(PEER): bench/bullmq/package.json bench/bullmq/package-lock.json
	cd bench/bullmq && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# `make up` keeps its campaigns in .local-store/ between runs; this starts it clean.
reset:
	rm -rf .local-store

bench: venv store peer
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .aws-sam local/node_modules bench/bullmq/node_modules

-include mk/tooling.mk
-include mk/local.mk

# Each invariant's mechanisms broken one at a time; the tests that guard them must fail (slow: not in `make test`).
.PHONY: mutants
mutants: venv
	$(PY) -m tests.mutants
