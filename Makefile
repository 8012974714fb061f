# GUARD: `make demo` rehearses a batch upgrade locally; `make test` runs the whole suite;
# `make faults` runs the fault matrix (tests/faults, docs/failure-handling.md).
# Both set up a virtualenv from requirements.txt first (once; again when it changes).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PYTHONPATH := lambdas:.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: setup demo rehearse test faults unit lint asl synth cdk-synth deploy bench bench-cold bench-judge bench-fleet bench-rollout clean local local-down

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	# the `guard` command (cli/guard.py), installed editable: the code stays in this tree
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: setup
	$(PY) -m sandbox --json rehearsal-summary.json

# The persistent local stack of ~/.guard/config.yaml (docs/cli.md): `guard` finds it until `make local-down`.
local: setup
	$(PY) -m cli.guard local up

local-down: setup
	$(PY) -m cli.guard local down

# make rehearse SCENARIO=scenarios/latency-regression.yaml
rehearse: setup
	$(PY) -m sandbox --scenario $(SCENARIO) --json rehearsal-summary.json

test: setup
	$(PY) -m pytest -q

# The fault matrix on the real ASL, each cell ending with the invariant check; its own budget (10 min).
faults: setup
	$(PY) -m pytest -q tests/faults

unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy lambdas sandbox infra app.py cli statemachines tests/faults benchmarks/fleet.py \
		benchmarks/cold_imports.py benchmarks/rollout.py

# statemachines/*.asl.json and docs/workflow.md's state list, from statemachines/build.py (stdlib only)
asl:
	$(PYTHON) statemachines/build.py

synth: setup
	$(PY) app.py

# The CDK CLI (npx aws-cdk@2; cdk.json runs app.py, which uses .venv by itself). No venv to activate.
# make deploy                      every stack of the tenants in cdk.json (shared registries first)
# make deploy STACKS=Guard-team-a  one tenant (and the shared registry it names)
CDK    ?= npx --yes aws-cdk@2
STACKS ?= --all
cdk-synth: setup
	$(CDK) synth --quiet

deploy: setup
	$(CDK) deploy $(STACKS) --require-approval broadening

bench: bench-cold

# Every function's bundle as `make synth` builds it (this machine's architecture): unzipped size, bytecode,
# and the cold import per handler in fresh Python 3.12 interpreters (docs/scale.md). make bench-cold RUNS=9
RUNS ?= 7
bench-cold: setup
	$(PY) benchmarks/cold_imports.py --runs $(RUNS)

# How often the validation judge is right on a seeded labelled corpus (docs/validation.md)
bench-judge: setup
	$(PY) benchmarks/judge.py
	$(PY) benchmarks/judge_bound.py

# A batch of many failing clusters on the real ASL: history, payload and cause sizes (docs/scale.md).
# make bench-fleet FLEET="1 50 500 2000"
FLEET ?= 1 50 500
bench-fleet: setup
	$(PY) benchmarks/fleet.py --clusters $(FLEET)

# A rollout of ROLLOUT clusters over the seed's nine batches, one child execution each (docs/scale.md).
# make bench-rollout ROLLOUT="50 5000"
ROLLOUT ?= 5000
bench-rollout: setup
	$(PY) benchmarks/rollout.py --clusters $(ROLLOUT)

clean:
	rm -rf cdk.out .build rehearsal-summary.json
