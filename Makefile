# Two entry points: `make demo` and `make test`. Both install what they need (idempotent, quick
# when already done) on a fresh Debian machine as root.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))

.PHONY: demo test system venv clean-venv bench

demo: system $(VENV)/.installed
	$(BIN)/noduletrack demo

test: system $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: system $(VENV)/.installed
	$(BIN)/python -m bench

# Debian packages: the real peers (Orthanc, dcmtk), the validator (dicom3tools), PostgreSQL.
system:
	@missing=""; \
	command -v Orthanc >/dev/null || missing="$$missing orthanc"; \
	[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	command -v storescu >/dev/null || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	command -v $(PY) >/dev/null || missing="$$missing python3 python3-venv python3-dev"; \
	command -v ss >/dev/null || missing="$$missing iproute2"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

# torch first, from constraints.txt (the local CPU wheel), so monai never pulls a CUDA build.
$(VENV)/.installed: pyproject.toml requirements.txt constraints.txt
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt
	@# The editable build prints setuptools' notes on stderr; keep them in a log unless it fails.
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt --no-deps -e . > $(VENV)/editable-install.log 2>&1 \
	  || { cat $(VENV)/editable-install.log; exit 1; }
	@touch $@

clean-venv:
	rm -rf $(VENV)
