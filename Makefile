# One command to run the platform, one to test it; both set everything up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help autoscale chaos observe run test test-cluster test-unit install migrate lint data samples train failures evaluate bench profile load clean

help:  ## This list: every target that carries a description
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' | \
	  awk -F'\t' '{printf "  make %-13s %s\n", $$1, $$2}'

run: install migrate  ## Start the whole platform on http://127.0.0.1:8000 (Ctrl-C stops it)
	@echo "Starting Ray Serve: API on :8000, Ray dashboard on http://127.0.0.1:8265"
	@echo "Development mode: demo user 'first' / '111' is created (PRIMITIVES_ENVIRONMENT=production disables it)"
	umask 077 && env $$(grep -v '^\s*#' config/ray.env | xargs) RAY_AUTH_MODE=token \
	  RAY_SERVE_HAPROXY_BINARY_PATH=$(CURDIR)/deploy/haproxy $(BIN)/serve run serve_config.yaml

test: install  ## Type check, then unit, API, integration and browser tests (starts PostgreSQL)
	$(BIN)/mypy
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-test-tools.sh
	PYTHONFAULTHANDLER=1 PRIMITIVES_TESTS_STRICT_SKIPS=1 $(BIN)/python -m pytest --ignore=tests/cluster

test-cluster: install  ## Multi-node tests: cluster autoscaling (fake provider), node loss, GCS restart
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-test-tools.sh
	PRIMITIVES_TESTS_STRICT_SKIPS=1 $(BIN)/python -m pytest tests/cluster -s

observe:  ## Prometheus on 127.0.0.1:9090 over the running platform's Ray nodes (after make run)
	bash scripts/observe.sh

test-unit: install  ## Unit tests only (no Ray, no database; seconds)
	$(BIN)/python -m pytest tests/unit

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  apt-get install -y -qq python3.11-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,training]'
	touch $(STAMP)

migrate: install  ## Apply the database migrations (PRIMITIVES_DATABASE_URL, else SQLite in var/)
	$(BIN)/primitives-admin db upgrade

lint: install  ## ruff format --check, ruff check and mypy over every package (CI runs it)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

data: install  ## Render the data set from every source into data/primitives (25-35 min on two cores; then only what is missing)
	$(BIN)/python -m training.datagen --out data/primitives

samples: install  ## Contact sheets with the labels drawn, and the box convention (docs/)
	$(BIN)/python -m training.samples --out docs

# One sitting of training: each model is fine-tuned from the shipped weights (the previous
# sitting's), a run resumes from its checkpoint in runs/ when stopped, and its validation
# curve is appended to weights/training-log.json, which carries the curve from machine to
# machine (weights/README.md). On a GPU machine: training/gpu.sh (about 10 minutes).
YOLO_HOURS ?= 1.4
SSD_EPOCHS ?= 1
CLASSIFIER_EPOCHS ?= 3
# Each source's training images drawn per epoch: why each weight is what it is, sitting by
# sitting, is in docs/training-mix.md. training/gpu.sh reads this line too.
YOLO_MIX ?= raycast=2 randomized=2 distractors=1 classic=0.3 photo_recoloured=0.25 photo_on_scene=0.25 small_pyramids=2 lookalikes=0
# The validation sources that pick the epoch that ships (docs/training-mix.md).
YOLO_VAL ?= raycast randomized distractors
# AdamW's starting rate for a sitting from the shipped weights (docs/training-mix.md).
YOLO_LR0 ?= 0.0003
# SSD's sitting: its mix, validation sources and one-cycle peak rate, at its served input
# side (docs/training-mix.md). training/gpu.sh reads these lines too.
SSD_MIX ?= raycast=2 distractors=1 mined=2 classic=0.3 photo_recoloured=0.25 photo_on_scene=0.25 lookalikes=2
SSD_VAL ?= raycast randomized
SSD_LR ?= 0.001
train: data  ## One training sitting: YOLO (YOLO_HOURS), SSD, model_v1 from the shipped weights
	$(BIN)/python -m training.train_yolo --data data/primitives/dataset.yaml \
	  --model weights/yolo_obb.pt --name yolo_sitting --hours $(YOLO_HOURS) --epochs 100 \
	  --optimizer AdamW --lr0 $(YOLO_LR0) --mix $(YOLO_MIX) --val-sources $(YOLO_VAL) \
	  --close-mosaic 2
	$(BIN)/python -m training.mine --model SSD --data data/primitives --out runs/mined-SSD.txt
	$(BIN)/python -m training.train_ssd --data data/primitives --init weights/ssdlite.pt \
	  --run runs/ssd_sitting --epochs $(SSD_EPOCHS) --lr $(SSD_LR) --mix $(SSD_MIX) \
	  --val-sources $(SSD_VAL) --mined runs/mined-SSD.txt
	$(BIN)/python -m training.train_classifier --data data/primitives \
	  --init weights/scene_classifier.pt --run runs/classifier_sitting \
	  --epochs $(CLASSIFIER_EPOCHS) --lr 1e-3
	$(BIN)/python -m training.calibrate --data data/primitives --model model_v1

failures: install  ## Contact sheets and tables of each detector's failures on the ray-caster split
	$(BIN)/python -m training.failures --model YOLO --split test_raycast --out docs
	$(BIN)/python -m training.failures --model SSD --split test_raycast --out docs

evaluate: install  ## Per model: own split, other renderer, background-only images, calibration
	$(BIN)/python -m training.evaluate --data data/primitives --out weights/metrics.json
	$(BIN)/python -m training.model_card

bench: install  ## Platform vs floor, LitServe and minimal Ray Serve; CPU per task (< 10 min)
	$(BIN)/pip install --quiet -c requirements.lock -e '.[bench]'
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m bench.run

profile: install  ## py-spy over every platform process under load (bench/out/profile)
	$(BIN)/pip install --quiet -c requirements.lock -e '.[bench]'
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m bench.profile

autoscale: install  ## Step load: a backlog takes YOLO to its maximum and back (fails if not)
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m bench.autoscale --check --plot bench/out/autoscale.png

chaos: install  ## Every platform process SIGKILLed in turn under load: API back within 15 s, nothing lost
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m bench.chaos --rounds 3 --max-gap 15

load: install  ## 20 users submit for 2 minutes; fails if an accepted task is lost
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m bench.load --users 20 --seconds 120

clean:  ## Remove the virtual environment, var/ (the SQLite database) and runs/
	rm -rf $(VENV) var runs
