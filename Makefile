# Course lab on pruning and quantization. Every target creates .venv when it is missing.
#   make lab        set up, prepare data where possible, start JupyterLab on the labs
#   make test       set up and run the whole test suite (what CI runs)
#   make run LAB=lab1_pruning PROFILE=smoke   execute a solution notebook headless into runs/
#   make release    regenerate the student notebooks from autograder/source/
#   make data [FROM=path/to/cifar10-copy]     prepare CIFAR-10 and the dense checkpoint
#   make check LAB=lab1_pruning [NB=my.ipynb] check a notebook as grading does (visible checks)
#   make handout    write the student handout (handout/ and handout.zip: no solutions)
#   make gradescope LAB=lab1_pruning          write gradescope-<lab>.zip, a Gradescope autograder
#   make gradescope LAB=lab1_pruning TRY=nb.ipynb   ... then run it here on nb.ipynb as Gradescope would

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB ?= lab1_pruning
PROFILE ?= smoke
FROM ?=
TRY ?=
# An extra index for the first install, e.g. https://download.pytorch.org/whl/cpu for PyTorch's
# CPU build on Linux (PyPI's Linux wheels carry CUDA, several GB; pip takes the CPU build,
# 2.x.y+cpu, as the newer). Empty: PyPI only.
TORCH_INDEX ?=

.PHONY: lab test run release data check handout gradescope venv lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + ": name one, e.g. make lab PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "cannot create $(VENV): on Debian or Ubuntu, install the venv module (sudo apt install python3-venv, or python3.11-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	touch $(STAMP)

# Jupyter refuses to run as root (containers, Colab-like machines) unless told to.
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	-$(BIN)/python -m helpers data $(if $(FROM),--from $(FROM))
	-$(BIN)/python -m helpers checkpoint
	$(BIN)/jupyter lab lab1_pruning.ipynb lab3_quant_prune.ipynb $(JUPYTER_ROOT)

check: $(STAMP)
	$(BIN)/python -m autograder validate "$(or $(NB),$(LAB).ipynb)"

# The student handout (make handout) has no sources, tests or solutions: these targets are the
# instructors'. There they stop before installing anything.
ifeq ($(wildcard autograder/source),)
test run release handout gradescope:
	@echo "make $@: an instructors' target; this copy is the student handout (no sources or tests). Students: make lab, make check LAB=..." >&2; exit 2
else
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

run: $(STAMP)
	$(BIN)/python -m autograder run --lab $(LAB) --profile $(PROFILE) --out runs

release: $(STAMP)
	$(BIN)/python -m autograder release

handout: $(STAMP)
	$(BIN)/python -m autograder handout --out handout --replace

gradescope: $(STAMP)
	$(BIN)/python -m autograder gradescope --lab $(LAB) --replace $(if $(TRY),--try $(TRY))
endif

data: $(STAMP)
	$(BIN)/python -m helpers data $(if $(FROM),--from $(FROM))
	$(BIN)/python -m helpers checkpoint

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
