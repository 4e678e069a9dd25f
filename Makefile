# gpu_ops.mig_serving — the README's two commands are `make sandbox` and `make test`.
# Both do their own set-up on a fresh machine: a virtualenv in .venv from a
# Python >= 3.12 (scripts/find-python.sh) and the Debian packages they need.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the test suite runs for real (none are started by installation):
# podman, runc and debootstrap for the simulated GPU nodes (tests/testbed); prometheus (with promtool), prometheus-node-exporter,
# nginx and dnsmasq for the serving-stack integration tests; python3-venv for Triton's own venv
# (tritonserver from the nvidia-pytriton wheel runs under Debian's python3).
TEST_APT_PACKAGES ?= git podman runc debootstrap prometheus prometheus-node-exporter prometheus-nginx-exporter nginx dnsmasq python3-venv
PYTEST_ARGS ?=

.PHONY: help sandbox sandbox-clean test venv apt-deps lint sanity unit changelog-lint build clean sync-shared docs autoscale-demo

help:
	@echo "make sandbox  - run site.yml against the embedded sandbox (inventories/sandbox); make sandbox-clean removes it"
	@echo "make test     - every check: lint, sanity, unit, conformance, integration"
	@echo "make autoscale-demo - the autoscaling loop closed on one machine (real Triton, nginx, dnsmasq, Prometheus); writes a report"
	@echo "make lint | sanity | unit | docs | build | clean"

$(STAMP): requirements/runtime.txt requirements/test.txt
	@test -x $(PY) || "$$(scripts/find-python.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/test.txt
	@touch $@

venv: $(STAMP)

apt-deps:
	@scripts/apt-deps.sh $(TEST_APT_PACKAGES)

# The main job: site.yml for real on two simulated GPU nodes (podman systemd containers), the cluster plays in
# render mode, the manifests validated, a report at the end (scripts/sandbox.sh). Run it again: nothing changes.
sandbox: venv apt-deps
	@scripts/sandbox.sh

sandbox-clean:
	@scripts/sandbox.sh clean

# Everything, as CI runs it. Each check is a pytest test (tests/quality, unit,
# conformance, integration), so one run reports them all and the last line is
# pytest's summary.
test: venv apt-deps
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS) tests

lint: venv
	$(VENV)/bin/pytest -p no:cacheprovider tests/quality -k "not sanity"

sanity: venv
	scripts/ansible-test-sanity.sh

unit: venv
	$(VENV)/bin/pytest -p no:cacheprovider tests/unit tests/conformance

# The autoscaling loop closed on one machine (about 5 minutes): real Triton pods, nginx (the rendered nginx_lb config),
# dnsmasq as the headless Service, Prometheus (the rendered PodMonitor settings and PrometheusRule), stand-ins for the
# HPA and Deployment controllers (tests/autoscale); writes build/autoscale-demo/<UTC time>/ (report.md, PNG plots, CSV,
# run.json) and prints its path. docs/testing.md says what stands in for Kubernetes.
autoscale-demo: venv apt-deps
	$(PY) benchmarks/autoscale_demo.py --profile demo --out build/autoscale-demo

# Module, filter, lookup and role option pages, and the shared-variable page, from DOCUMENTATION and the argument
# specs (antsibull-docs); tests/quality/test_docs_current.py fails when docs/ differs from what this writes.
docs: venv
	$(PY) scripts/gen-docs.py

build: venv
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/dist .

# Refresh tests/data/shared from the project's shared test data (../shared), byte for byte.
sync-shared:
	test -d ../shared
	rm -rf tests/data/shared && mkdir -p tests/data/shared
	cp -r ../shared/fixtures ../shared/conformance tests/data/shared/
	chmod -R u+w tests/data/shared

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
