# Developer entry points. `make` lists them; `make demo` and `make test` work on a fresh machine.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Redone only when the dependencies change (pyproject.toml newer than the stamp).
VENV_STAMP := $(VENV)/.installed-from-pyproject
SERVERS := scripts/servers.sh
CONTROLPLANE := scripts/controlplane
KIND := scripts/kind

# The ports scripts/servers.sh uses; tests and the CLI get matching URLs unless already set.
GAMIFY_NATS_PORT ?= 4222
GAMIFY_MYSQL_PORT ?= 3306
GAMIFY_GCS_PORT ?= 4443
export GAMIFY_NATS_PORT GAMIFY_MYSQL_PORT GAMIFY_GCS_PORT
export GAMIFY_NATS_URL ?= nats://127.0.0.1:$(GAMIFY_NATS_PORT)
export GAMIFY_MYSQL_URL ?= mysql+pymysql://root@127.0.0.1:$(GAMIFY_MYSQL_PORT)/
export STORAGE_EMULATOR_HOST ?= http://127.0.0.1:$(GAMIFY_GCS_PORT)

# mypy checks the operator package too once it exists.
MYPY_PACKAGES := -p gamify $(if $(wildcard operator/gamify_operator/__init__.py),-p gamify_operator) -p bench -p reliability

.PHONY: help venv servers-up servers-down servers-status crds cluster-build cluster-up cluster-down test lint demo \
	bench clean images kind-up deploy kind-down

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV_STAMP) ## create .venv and install the project with its dev tools

# The operator package's first appearance also needs a reinstall (editable installs list packages).
$(VENV_STAMP): pyproject.toml $(wildcard operator/gamify_operator/__init__.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

servers-up: venv ## start NATS (JetStream), MariaDB and the GCS emulator, or reuse running ones
	$(SERVERS) up

servers-down: ## stop the servers that servers-up started (never ones it reused)
	$(SERVERS) down

servers-status: ## show which servers answer, and who started them
	$(SERVERS) status

# The Kubernetes control plane the operator tests run against (scripts/controlplane/).
cluster-build: ## build etcd, kube-apiserver, kube-controller-manager, kubectl, helm (cached; slow once)
	$(CONTROLPLANE)/build.sh

cluster-up: cluster-build ## start the local Kubernetes control plane on loopback
	$(CONTROLPLANE)/up.sh

cluster-down: ## stop the control plane that cluster-up started
	$(CONTROLPLANE)/down.sh

# The kind path (docs/kind.md): needs a Docker engine, kind, kubectl and helm; not run by `make test`.
images: ## build the image gamify:<version> from the Dockerfile (needs a Docker engine)
	$(KIND)/images.sh

kind-up: ## create a kind cluster "gamify" (needs Docker and kind)
	$(KIND)/up.sh

deploy: venv ## on the kind cluster: NATS, MySQL, GCS emulator, the operator chart, an example program
	$(KIND)/deploy.sh

kind-down: ## delete the kind cluster
	$(KIND)/down.sh

test: venv servers-up cluster-build ## run every test against the real servers
	$(BIN)/pytest -q --durations=15

lint: venv ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_PACKAGES)
	$(BIN)/python -m gamify_operator.crd --check

crds: venv ## regenerate crds/ from the pydantic program model, and the chart's copy
	$(BIN)/python -m gamify_operator.crd --write
	cp crds/gamificationprograms.gamification.io.yaml charts/gamification-operator/crds/

demo: venv servers-up ## run the whole pipeline on this machine with a sample program
	$(BIN)/gamify demo

bench: venv servers-up ## run the benchmarks (bench/run.py)
	$(BIN)/python bench/run.py

# The faults run on NATS and MariaDB servers of their own (stopped and killed on purpose); the
# bad-input run and the soak use the servers of servers-up. ARGS=--quick: the short fault run only.
.PHONY: reliability
reliability: venv servers-up cluster-build ## faults, bad input (5,000 cases), 10-min soak; rewrites docs/RELIABILITY.md (~25 min); ARGS=--quick for CI
	$(BIN)/python reliability/run.py $(ARGS)
ifeq ($(ARGS),)
	$(BIN)/python reliability/bad_input.py --out docs/RELIABILITY.md
	$(BIN)/python -m reliability.soak --minutes 10 --out docs/RELIABILITY.md --json docs/reliability-soak.json
endif

clean: ## stop the servers and control plane started here, delete the .gamify state folder
	$(CONTROLPLANE)/down.sh
	$(SERVERS) clean
