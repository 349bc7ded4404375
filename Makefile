# baseline-operator — `make help` lists the targets. Every target sets up what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV := .dev

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml requirements/dev.txt
	@echo "==> setting up $(VENV) (Python dependencies from PyPI, exactly as locked in requirements/dev.txt)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	@$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

.PHONY: setup
setup: $(VENV)/.installed ## Create .venv with the operator and its dev tools (locked: requirements/)

.PHONY: lock
lock: setup ## Regenerate the lock files in requirements/ from pyproject.toml (UPGRADE=1: newest allowed)
	@hack/lock.sh

.PHONY: controlplane
controlplane: setup ## Build etcd, kube-apiserver, kube-controller-manager, kubectl (cached)
	@echo "==> control-plane binaries (cold build: several minutes on 2 cores, then cached)"
	@$(BIN)/baseline-localcluster build

.PHONY: test-tools
test-tools: setup ## Build the test tools: Prometheus, promtool, Conftest, kube-score, Helm (cached)
	@echo "==> test tools (cold build: several minutes on 2 cores, then cached)"
	@$(BIN)/baseline-localcluster build --tools

.PHONY: node-packages
node-packages: ## Debian packages the real node needs: runc, CNI plugins, busybox-static, nftables, iptables (root)
	@hack/install-node-packages.sh

.PHONY: node
node: setup node-packages ## Build the real node: kubelet, kube-proxy, kube-scheduler, containerd, kube-network-policies, CoreDNS, pause (cached)
	@echo "==> real-node binaries (cold build: several minutes on 2 cores, then cached)"
	@$(BIN)/baseline-localcluster build --node

.PHONY: image-packages
image-packages: ## Debian packages the image build needs: mmdebstrap, buildah (root)
	@hack/install-image-packages.sh

.PHONY: image
image: setup image-packages ## Build the operator's image without Docker (Debian base, buildah) -> .dev/image/ (OCI archive, SBOM)
	@echo "==> the operator's image (cold: about 2 minutes, the base then cached; skipped when nothing changed)"
	@$(BIN)/python -m localcluster.operator_image --output $(DEV)/image

.PHONY: cluster-up
cluster-up: controlplane $(if $(NODE),node) ## Start the local control plane (NODE=1: and a real node, needs root); writes .dev/kubeconfig
	@$(BIN)/baseline-localcluster --dev-dir $(DEV) up $(if $(NODE),--node)

.PHONY: cluster-down
cluster-down: ## Stop the local control plane (and node) and remove its state, namespaces, mounts, cgroups
	@if [ -x $(BIN)/baseline-localcluster ]; then $(BIN)/baseline-localcluster --dev-dir $(DEV) down; fi

.PHONY: demo
demo: cluster-up ## Run the operator on the local control plane with the sample baselines
	@hack/demo.sh

.PHONY: lint
lint: setup ## ruff, mypy (strict) and import-linter
	@echo "==> lint"
	@$(BIN)/ruff check operator tests
	@$(BIN)/ruff format --check operator tests
	@$(BIN)/mypy
	@$(BIN)/lint-imports

.PHONY: unit
unit: setup ## Unit tests (no cluster, seconds)
	@$(BIN)/pytest tests/unit

.PHONY: e2e
e2e: controlplane test-tools ## End-to-end tests on a real local control plane started for the session
	@$(BIN)/pytest tests/e2e

.PHONY: node-test
node-test: node ## Smoke tests of the real node (Pods, DNS, NetworkPolicies on packets, teardown; root)
	@$(BIN)/pytest tests/node

.PHONY: node-test-in-cluster
node-test-in-cluster: node image ## The real node's operator-dependent tests (the floor's packets) against the in-cluster operator, not a host process (root)
	@BASELINE_NODE_OPERATOR=in-cluster $(BIN)/pytest -rA tests/node/test_floor_packets.py

.PHONY: test
test: lint controlplane test-tools node image ## Everything CI runs: lint, unit, e2e and real-node tests
	@echo "==> tests (unit, then e2e on a real control plane)"
	@$(BIN)/pytest tests

.PHONY: test-faults
test-faults: lint controlplane test-tools ## Every fault scenario at full size (10 SIGKILL trials x 300 namespaces, 2 min outage, 3 min churn), with the times measured
	@BASELINE_FAULTS=all $(BIN)/pytest -rP tests/e2e/test_faults.py tests/e2e/test_api_faults.py tests/e2e/test_conflicts.py tests/e2e/test_high_availability.py

$(VENV)/.installed-bench: $(VENV)/.installed
	@echo "==> bench extras (matplotlib, py-spy, from PyPI)"
	@$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $@

.PHONY: bench
bench: controlplane $(VENV)/.installed-bench ## Benchmarks on local control planes (~75 min with the scale series; BENCH_ARGS=--quick: ~6 min) -> bench/results/
	@$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: chart
chart: setup ## Regenerate the Helm chart's templates from manifests/ (charts/baseline-operator)
	@$(BIN)/python hack/gen-chart.py

.PHONY: clean
clean: cluster-down ## Remove local state (not the cached binaries)
	rm -rf $(DEV) .mypy_cache .ruff_cache .pytest_cache
