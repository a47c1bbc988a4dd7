# Two commands for a newcomer: `make run` (the pipeline on the embedded default) and `make test`.
# Both install what they need (Debian packages for headless MuJoCo, the pinned venv) and are idempotent.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libopengl0 libosmesa6 chromium
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1
# absolute, so `dvc exp run --temp/--queue` copies log to the same embedded store
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: run test setup system-deps lint compare bench clean-cache experts grounding eval-libero90-expert data-libero90 \
  check-lock bundle bundle-install libero90 robustness export-checkpoint eval-checkpoint eval-libero90 \
  experts-host data-pro exec-sweep failure-videos

run: setup ## run the whole pipeline (dvc repro) on the default: one task, CPU
	dvc repro

test: setup ## install and run the test suite (real simulator, tiny configs)
	$(PY) -m pytest -q -ra

setup: system-deps $(VENV)/.installed

system-deps: ## Debian packages for headless rendering (EGL / OSMesa); skipped when present
	@if dpkg -s $(APT_PKGS) >/dev/null 2>&1; then echo "system packages present"; else \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS); fi

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

check-lock: setup ## fail if dvc.lock no longer matches a stage's code, params or committed metrics
	$(PY) -m libero_dp.lockcheck

lint: setup
	$(VENV)/bin/ruff check .

compare: setup ## side-by-side table + plot of DVC experiments and MLflow runs
	$(PY) stages/compare.py

bench: setup ## benchmarks (results in benchmarks/results/)
	$(PY) benchmarks/loader.py

experts: setup ## scripted-expert success table, 90 tasks x 50 official init states -> metrics/experts.json
	$(PY) benchmarks/expert_table.py --tasks libero_90 --episodes 50 --workers $(or $(WORKERS),2)

eval-libero90-expert: setup ## the full libero_90 protocol (90 x 50) with the scripted expert, images read as a policy would
	dvc exp run -n libero90-expert -S eval.policy=expert -S 'eval.tasks=[libero_90]' -S eval.expert_image_every=64 \
	  -S eval.videos_success=0 -S eval.videos_failure=1 -S eval.max_steps=600

data-libero90: setup ## the libero_90 demonstration dataset (N demos per task, default 10) through DVC
	dvc exp run -n libero90-data -S 'collect.tasks=[libero_90]' -S collect.demos_per_task=$(or $(N),10) \
	  -S collect.expert_check_episodes=0 -S collect.max_steps=600 -S collect.on_task_failure=skip extract

clean-cache: ## drop resumable per-episode caches (collect/eval); DVC outputs stay
	rm -rf data/cache

bundle: setup ## offline bundle for an air-gapped GPU host -> dist/libero-bundle.tar.xz (+ parts list, report)
	@test -f dist/cache/assets.json -a -f dist/cache/language.safetensors || \
	  $(PY) tools/trace_assets.py --suites libero_90 libero_10 libero_spatial libero_object libero_goal \
	    $(PRO_SUITES) --out dist/cache/assets.json \
	    --language dist/cache/language.safetensors
	$(PY) tools/build_bundle.py --out dist --max-texture $(or $(MAX_TEXTURE),1024)

bundle-install: ## on the GPU host (no index, its own torch): install dist/, then check every libero_90 task
	bash tools/install_bundle.sh dist $(BUNDLE_ARGS)

# libero_90 end to end on a GPU host (after `make bundle-install` and `source .bundle/env.sh`): collect N demos
# per task on every core (EGL renders on the GPUs), train with bf16 + torch.compile on all GPUs (torchrun DDP
# through LIBERO_DP_TRAIN_GPUS), evaluate with one Ray worker per core. Every stage resumes after a kill
# (collect/eval cache each episode, train restarts from models/train_state.pt), so the same command can be
# rerun in sessions of under 10 minutes until it completes, or started once with setsid and polled
# (README, "libero_90 on a GPU host"). Knobs: N, TASKS, PRESET, STEPS, BATCH, WORKERS, EPISODES, DEVICE,
# COMPILE, SEED, EVAL_TASKS (e.g. a suite and its LIBERO-PRO variants), GROUNDING (eval.grounding_inits),
# VIDEOS (failure videos per task, default 1), INIT (train.init_from: e.g. checkpoints/libero90, so a session
# too short for a whole run continues the last one's policy instead of starting again);
# LIBERO90_EXTRA adds -S overrides. Large outputs are hard-linked into the DVC cache there
# (cache.type hardlink: no copy of the ~20 GB of frames).
PRO_SUITES = $(foreach s,libero_spatial libero_object libero_goal libero_10,$(foreach v,lan object swap task,$(s)_$(v)))
CORES = $(shell nproc 2>/dev/null || echo 2)
LIBERO90_ARGS = -S 'collect.tasks=$(or $(TASKS),[libero_90])' -S collect.demos_per_task=$(or $(N),20) \
  -S collect.workers=$(CORES) -S collect.expert_check_episodes=0 -S collect.max_steps=600 \
  -S collect.on_task_failure=skip -S extract.workers=$(CORES) \
  -S train.preset=$(or $(PRESET),small) -S train.device=$(or $(DEVICE),cuda) -S train.bf16=true \
  -S train.compile=$(or $(COMPILE),true) -S train.seed=$(or $(SEED),0) \
  -S train.steps=$(or $(STEPS),10000) -S train.batch_size=$(or $(BATCH),256) \
  -S train.num_workers=$(or $(WORKERS),4) -S train.val_every=1000 -S train.ckpt_every=500 \
  -S eval.workers=$(CORES) -S eval.episodes_per_task=$(or $(EPISODES),50) -S eval.max_steps=600 \
  -S eval.videos_success=0 -S eval.videos_failure=$(or $(VIDEOS),1) -S eval.grounding_inits=$(or $(GROUNDING),0) \
  $(if $(EVAL_TASKS),-S 'eval.tasks=$(EVAL_TASKS)') $(if $(INIT),-S train.init_from=$(INIT)) $(LIBERO90_EXTRA)

# The expert's tables on a GPU host's cores (bundle env, no venv), after an expert change: the four standard
# suites over their 50 official init states, a libero_90 regression check and a LIBERO-PRO screening.
STANDARD_SUITES = libero_spatial libero_object libero_goal libero_10
experts-host: ## INITS_90=5 INITS_PRO=10 [WORKERS_X=cores] -> metrics/experts_{standard,libero90_check}.json,
# metrics/grounding_expert_libero_goal.json, metrics/experts_pro/<suite>.json (one a suite: a session cut short
# keeps the suites done)
	nice -n 10 python benchmarks/expert_table.py --tasks $(STANDARD_SUITES) --episodes 50 \
	  --workers $(or $(WORKERS_X),$(CORES)) --out metrics/experts_standard.json
	nice -n 10 python benchmarks/expert_table.py --tasks libero_90 --episodes $(or $(INITS_90),5) \
	  --workers $(or $(WORKERS_X),$(CORES)) --out metrics/experts_libero90_check.json
	nice -n 10 python benchmarks/grounding.py --suite libero_goal --inits 1 --workers $(or $(WORKERS_X),$(CORES)) \
	  --out metrics/grounding_expert_libero_goal.json
	for s in $(PRO_SUITES); do nice -n 10 python benchmarks/expert_table.py --tasks $$s \
	  --episodes $(or $(INITS_PRO),10) --workers $(or $(WORKERS_X),$(CORES)) --out metrics/experts_pro/$$s.json \
	  || exit 1; done

libero90: ## libero_90 collect -> ... -> report on a GPU host (bundle installed); rerun after a kill resumes
	@command -v dvc >/dev/null || { echo "dvc not found: install the bundle (make bundle-install) and" \
	  "source .bundle/env.sh"; exit 2; }
	dvc config --local cache.type hardlink,copy
	LIBERO_DP_TRAIN_GPUS=all dvc exp run -n $(or $(NAME),libero90-$(or $(N),20)-s$(or $(SEED),0)) $(LIBERO90_ARGS)

# A trained policy as one self-contained folder (bf16 EMA weights, config with its task names, normalisation
# stats, language embeddings, sha256 manifest; <= 64 MiB), and its evaluation on this machine's CPU with the
# eval stage's code: anyone can check a claimed rate without a GPU. CKPT defaults to the libero_90 policy.
export-checkpoint: setup ## OUT=checkpoints/NAME [MODELS=models] [STATS=data/scaled/stats.json]
	@test -n "$(OUT)" || { echo "OUT= the folder to write, e.g. checkpoints/libero90"; exit 2; }
	$(PY) tools/checkpoint.py export --models $(or $(MODELS),models) --stats $(or $(STATS),data/scaled/stats.json) \
	  --out $(OUT)
eval-checkpoint: setup ## [CKPT=checkpoints/libero90] [TASKS="libero_90:0 libero_90:7"] [EPISODES=10] [MAX_STEPS=]
	@test -f $(or $(CKPT),checkpoints/libero90)/manifest.json || { echo "$(or $(CKPT),checkpoints/libero90):" \
	  "no exported checkpoint (manifest.json); make export-checkpoint OUT=... writes one"; exit 2; }
	$(PY) tools/checkpoint.py eval $(or $(CKPT),checkpoints/libero90) $(if $(TASKS),--tasks $(TASKS)) \
	  --episodes $(or $(EPISODES),10) --workers $(or $(WORKERS),2) $(if $(MAX_STEPS),--max-steps $(MAX_STEPS)) \
	  $(if $(EXEC_STEPS),--exec-steps $(EXEC_STEPS) --out metrics/checkpoints/$(notdir $(or $(CKPT),checkpoints/libero90))_steps$(EXEC_STEPS).json)
# The committed libero_90 policy, with the step limit its GPU evaluation used (the libero90 preset's 600).
eval-libero90: ## [TASKS="libero_90:0 libero_90:7"] [EPISODES=10]: checkpoints/libero90 on this CPU
	$(MAKE) eval-checkpoint CKPT=checkpoints/libero90 MAX_STEPS=$(or $(MAX_STEPS),600)

# Failure videos per cause from a committed checkpoint on this CPU: evaluate it with failure videos on, then one
# page (reports/checkpoints/NAME_failures: failed episodes grouped by cause, counts per family, the videos
# embedded) tracked by DVC. The default tasks are, for each cause, the libero_90 tasks where the seed-0 GPU run
# (benchmarks/results/libero90_s0) failed that way most often.
FAILURE_TASKS = $(addprefix libero_90/,KITCHEN_SCENE1_open_the_bottom_drawer_of_the_cabinet \
  LIVING_ROOM_SCENE1_pick_up_the_tomato_sauce_and_put_it_in_the_basket \
  LIVING_ROOM_SCENE2_pick_up_the_milk_and_put_it_in_the_basket KITCHEN_SCENE9_put_the_frying_pan_on_the_cabinet_shelf \
  KITCHEN_SCENE10_put_the_black_bowl_in_the_top_drawer_of_the_cabinet KITCHEN_SCENE4_put_the_wine_bottle_on_the_wine_rack \
  KITCHEN_SCENE1_open_the_top_drawer_of_the_cabinet_and_put_the_bowl_in_it)
failure-videos: setup ## [CKPT=checkpoints/libero90] [TASKS="..."] [EPISODES=5] [VIDEOS=2 per task]
	$(eval FV_NAME := $(notdir $(or $(CKPT),checkpoints/libero90))_failures)
	$(PY) tools/checkpoint.py eval $(or $(CKPT),checkpoints/libero90) --tasks $(or $(TASKS),$(FAILURE_TASKS)) \
	  --episodes $(or $(EPISODES),5) --workers $(or $(WORKERS),2) --max-steps $(or $(MAX_STEPS),600) \
	  --videos $(or $(VIDEOS),2) --out metrics/checkpoints/$(FV_NAME).json
	$(PY) tools/checkpoint.py failures metrics/checkpoints/$(FV_NAME).json --out reports/checkpoints/$(FV_NAME)
	dvc add -q reports/checkpoints/$(FV_NAME)

# The execution-length lesson at scale: one checkpoint, exec.steps 8/16/32/64 (eval and report rerun only);
# `make compare` then sets them side by side (success vs exec.steps, Wilson intervals).
exec-sweep: setup ## [TASKS=[libero_90:0,libero_90:7,...]] [EPISODES=10]
	for s in 8 16 32 64; do dvc exp run -n steps-$$s -S exec.steps=$$s -S eval.episodes_per_task=$(or $(EPISODES),10) \
	  $(if $(TASKS),-S 'eval.tasks=$(TASKS)') || exit 1; done

# Language grounding within a scene: every ordered pair (A, B) of the suite's tasks that share a scene, B's
# instruction from A's first INITS official init states; eval.json `grounding` and the report's table.
grounding: setup ## SUITE=libero_goal|libero_90|... [POLICY=learned|expert] [INITS=2] [EPISODES=10]
	@test -n "$(SUITE)" || { echo "SUITE= a suite whose scenes hold several tasks: libero_goal, libero_90"; exit 2; }
	dvc exp run -n grounding-$(SUITE)-$(or $(POLICY),learned) -S 'eval.tasks=[$(SUITE)]' \
	  -S eval.policy=$(or $(POLICY),learned) -S eval.grounding_inits=$(or $(INITS),2) \
	  -S eval.episodes_per_task=$(or $(EPISODES),10) -S eval.max_steps=600 -S eval.videos_success=0 \
	  -S eval.videos_failure=0 report

# Demonstrations for a standard suite and its four LIBERO-PRO variants (perturbed scenes; the expert follows
# each variant's goal): demo files of PRO tasks are named suite__name, the eval stage maps them back.
data-pro: setup ## SUITE=libero_goal [N=10] -> data/demos, data/extracted through DVC
	@test -n "$(SUITE)" || { echo "SUITE= one of libero_spatial libero_object libero_goal libero_10"; exit 2; }
	dvc exp run -n pro-data-$(SUITE) -S 'collect.tasks=$(ROBUST_TASKS)' -S collect.demos_per_task=$(or $(N),10) \
	  -S collect.expert_check_episodes=0 -S collect.max_steps=600 -S collect.on_task_failure=skip extract

# One checkpoint (or the expert: POLICY=expert) on a base suite and its four LIBERO-PRO variants; the report
# gets the robustness table (success, Wilson interval, drop from the base in points, per task).
ROBUST_TASKS = [$(SUITE),$(SUITE)_lan,$(SUITE)_object,$(SUITE)_swap,$(SUITE)_task]
robustness: setup ## SUITE=libero_goal [POLICY=learned|expert] [EPISODES=50] [VIDEOS=1 failure video a task]
	@test -n "$(SUITE)" || { echo "SUITE= one of libero_spatial libero_object libero_goal libero_10"; exit 2; }
	dvc exp run -n robustness-$(SUITE)-$(or $(POLICY),learned) -S 'eval.tasks=$(ROBUST_TASKS)' \
	  -S eval.policy=$(or $(POLICY),learned) -S eval.episodes_per_task=$(or $(EPISODES),50) -S eval.max_steps=600 \
	  -S eval.videos_success=0 -S eval.videos_failure=$(or $(VIDEOS),1) \
	  report
