# Template checks: cfn-lint, sam validate --lint, sam build, checkov, included by the Makefile.
# `make template-checks` sets itself up (tooling venvs, once per requirements change) and needs
# no network after that except PyPI for `sam build`'s layer dependencies; no AWS account.
SAM_VENV ?= .venv-sam
CHECKOV_VENV ?= .venv-checkov
SAM_STAMP := $(SAM_VENV)/.installed-$(shell cat requirements-tooling.txt | md5sum | cut -c1-8)
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell cat requirements-tooling-checkov.txt | md5sum | cut -c1-8)
# SAM CLI and checkov read AWS settings but talk to no AWS service here.
TOOLING_ENV := AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=checks \
	AWS_SECRET_ACCESS_KEY=checks AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0
TRANSLATED := .aws-sam/translated.json

.PHONY: tooling template-checks cfn-lint sam-validate sam-build checkov

tooling: $(SAM_STAMP) $(CHECKOV_STAMP)

$(SAM_STAMP): requirements-tooling.txt
	rm -rf $(SAM_VENV)
	$$(scripts/find-python) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-tooling.txt
	touch $@

$(CHECKOV_STAMP): requirements-tooling-checkov.txt
	rm -rf $(CHECKOV_VENV)
	$$(scripts/find-python) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-tooling-checkov.txt
	touch $@

template-checks: cfn-lint sam-validate sam-build checkov

test: template-checks

cfn-lint: $(SAM_STAMP)
	$(TOOLING_ENV) $(SAM_VENV)/bin/cfn-lint template.yaml

sam-validate: $(SAM_STAMP)
	$(TOOLING_ENV) $(SAM_VENV)/bin/sam validate --lint --template template.yaml

# Lambda's python3.12 runtime is built with a local python3.12: put the interpreter that
# scripts/find-python chose first on PATH (pyenv's shim may not answer to `python3.12`).
sam-build: $(SAM_STAMP)
	PATH="$$(dirname "$$(scripts/find-python)"):$$PATH" $(TOOLING_ENV) \
		$(SAM_VENV)/bin/sam build --template template.yaml --cached --parallel
	@# The one layer: the domain package where Lambda imports it from (/opt/python/campaigns),
	@# next to its dependencies, for arm64, with no stray copy under /opt/python/python.
	test -f .aws-sam/build/CommonLayer/python/campaigns/__init__.py
	test -d .aws-sam/build/CommonLayer/python/aws_lambda_powertools
	test -d .aws-sam/build/CommonLayer/python/pynamodb
	test ! -e .aws-sam/build/CommonLayer/python/python -a ! -e .aws-sam/build/CommonLayer/python/bin
	test -z "$$(find .aws-sam/build/CommonLayer/python/campaigns -name __pycache__)"
	ls .aws-sam/build/CommonLayer/python/pydantic_core/*.cpython-312-aarch64-linux-gnu.so

# Checkov on the template translated to plain CloudFormation (so it sees the generated roles,
# stage, permissions...). Every skip is a `Metadata: checkov: skip:` entry with its reason in
# template.yaml; any failed check fails this target.
checkov: $(SAM_STAMP) $(CHECKOV_STAMP)
	mkdir -p .aws-sam
	$(TOOLING_ENV) $(SAM_VENV)/bin/python scripts/sam-translate template.yaml > $(TRANSLATED)
	$(TOOLING_ENV) $(CHECKOV_VENV)/bin/checkov -f $(TRANSLATED) --framework cloudformation \
		--compact --quiet --skip-download

clean: clean-tooling

.PHONY: clean-tooling
clean-tooling:
	rm -rf $(SAM_VENV) $(CHECKOV_VENV)
