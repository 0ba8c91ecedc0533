# pynenc-django developer commands. `make test` is all a fresh machine needs.
#   make test                      the whole suite on SQLite
#   DATABASE_URL=... make test     the whole suite on PostgreSQL or MariaDB/MySQL
#   make test-all                  SQLite, PostgreSQL and MariaDB, one after the other
#   make lint                      ruff, mypy (django-stubs), migrations drift
#   make bench-runner              idle cost and wake-up latency of the runner, 3 databases
#   make bench-admin               admin page query counts and server times at 1M invocations
#   make bench-fan-in              parents waiting for children: our runner vs ProcessRunner, 3 databases
#                                  (FAN_IN_ARGS='--parents 20 --children 5 --runs 1' for a quick look)
#   make bench-delayed             delayed invocations (eta/countdown): start delay after the due
#                                  time, idle cost while they wait; 3 databases (DELAYED_ARGS=...)
#   make bench-hops                what one hop between processes costs here, back to back and
#                                  after an idle gap: Redis and PostgreSQL (HOPS_ARGS=...)
#   make bench                     end to end (single and batch submit), submit rate, round trip,
#                                  statements vs Celery, procrastinate, django-tasks-db; 3 interleaved
#                                  runs, ~60 min (17 of them seeding 10M finished invocations);
#                                  bench/results/<date>.md; non-zero if a budget fails
#                                  (BENCH_ARGS='--quick --runs 1' for a quick look, ~7 min; --help)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres
MARIADB_URL ?= mysql://root@127.0.0.1:3306/test

.PHONY: test test-all lint venv clean bench-runner bench-admin

$(VENV)/.installed: pyproject.toml
	@python=$$(scripts/find-python) && echo "Using $$python ($$($$python --version))" && \
	  $$python -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,postgres]'
	@# The [beat] extra's django-celery-beat declares Django<6.1; it works on 6.1 (tests/beat),
	@# so it comes without its pins and its real dependencies are named here.
	$(PY) -m pip install --quiet --no-deps 'django-celery-beat>=2.7'
	$(PY) -m pip install --quiet 'celery>=5.2.3,<6.0' 'django-timezone-field>=5.0' \
	  'python-crontab>=2.3.4' 'cron-descriptor>=1.2.32,<2.0.0' tzdata
	@touch $@

# mysqlclient compiles against the MariaDB client headers; install them if missing.
$(VENV)/.installed-mysql: $(VENV)/.installed
	@if ! pkg-config --exists mariadb libmariadb mysqlclient 2>/dev/null && \
	    ! pkg-config --exists libmariadb 2>/dev/null; then \
	  echo "Installing the MariaDB client headers (libmariadb-dev, pkg-config) for mysqlclient"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; \
	fi
	$(PY) -m pip install --quiet -e '.[mysql]'
	@touch $@

venv: $(VENV)/.installed

# make bench: the peers (procrastinate, django-tasks-db, celery) and matplotlib.
$(VENV)/.installed-bench: $(VENV)/.installed-mysql
	$(PY) -m pip install --quiet -e '.[bench,mysql]'
	@touch $@

# The admin's browser test drives Debian's Chromium through Playwright (no browser download).
$(VENV)/.installed-browser: $(VENV)/.installed
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for the admin's browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi
	@touch $@

ifneq (,$(filter mysql%,$(DATABASE_URL)))
test: $(VENV)/.installed-mysql $(VENV)/.installed-browser
else
test: $(VENV)/.installed $(VENV)/.installed-browser
endif
	$(PY) -m tests.dbcheck
	$(PY) -m pytest $(PYTEST_ARGS)

test-all:
	$(MAKE) test DATABASE_URL=
	$(MAKE) test DATABASE_URL=$(POSTGRES_URL)
	$(MAKE) test DATABASE_URL=$(MARIADB_URL)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy pynenc_django
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django makemigrations pynenc_django pynenc_django_beat --check --dry-run

bench-runner: $(VENV)/.installed-mysql
	$(PY) bench/runner_idle_wake.py

bench-admin: $(VENV)/.installed
	$(PY) bench/admin_pages.py

.PHONY: bench-fan-in
bench-fan-in: $(VENV)/.installed-mysql
	$(PY) bench/fan_in.py $(FAN_IN_ARGS)

.PHONY: bench-delayed
bench-delayed: $(VENV)/.installed-mysql
	$(PY) bench/delayed.py $(DELAYED_ARGS)

.PHONY: bench-hops
bench-hops: $(VENV)/.installed-bench
	$(PY) -m bench.hops $(HOPS_ARGS)

# bench/ is a directory: without .PHONY, make would call the target up to date.
# Every system through one procedure (bench/harness.py), each Django-based one at Django's
# defaults and tuned; see bench/README.md.
.PHONY: bench
bench: $(VENV)/.installed-bench
	$(PY) -m bench.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .test-dbs .pytest_cache

# ---------------------------------------------------------------- the example project
#   make demo      the example shop's workload on two runners, then a summary (about 1 min)
#   make serve     the example shop's runners and http://127.0.0.1:8000/admin/ (admin / pynenc-demo)
# SQLite in example_project/var/ unless DATABASE_URL is set.
EXAMPLE_MANAGE = cd example_project && $(abspath $(PY)) manage.py

.PHONY: demo serve example-setup

ifneq (,$(filter mysql%,$(DATABASE_URL)))
example-setup: $(VENV)/.installed-mysql
else
example-setup: $(VENV)/.installed
endif
	$(EXAMPLE_MANAGE) migrate --noinput
	$(EXAMPLE_MANAGE) ensure_admin

demo: example-setup
	$(EXAMPLE_MANAGE) demo

serve: example-setup
	$(EXAMPLE_MANAGE) serve
