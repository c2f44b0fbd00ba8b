# Two entry points on a fresh Debian 12 machine, as root: `make run` and `make test`.
# Both install what they need: Debian packages with apt, Python packages into .venv.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

# Everything ctbot needs from Debian, in one list (the machine features add theirs here).
APT_PACKAGES := python3 python3-venv python3-pip ca-certificates \
	systemd-container debootstrap util-linux mount iputils-ping iproute2 nftables \
	openssh-client busybox-static python3-seccomp curl openssl

.PHONY: run test lint system-deps venv clean install uninstall

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need root to apt-get install:" $$missing >&2; exit 1; fi; \
	  echo "apt-get install $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: system-deps $(STAMP)

run: venv
	@# What this host lacks, if anything (a warning only: the bot starts either way).
	@$(VENV)/bin/ctbot cmd "doctor --failing" || true
	$(VENV)/bin/ctbot serve

# ctbot as a systemd service: a venv under /opt/ctbot, /etc/ctbot, ctbot.service.
# Again to upgrade; `make uninstall` keeps /etc/ctbot, the state and the machines.
install: venv
	$(VENV)/bin/ctbot install

uninstall: venv
	$(VENV)/bin/ctbot uninstall

lint: venv
	$(VENV)/bin/ruff check bot handlers services tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
