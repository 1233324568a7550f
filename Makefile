# Tracker: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DB ?= postgres
PG_URL ?= postgres://postgres@127.0.0.1:5432/tracker
PYTEST_ARGS ?=
# The tests of what lives in the shared cache run again against Redis (make test-redis).
REDIS_TEST_URL ?= redis://127.0.0.1:6379/1

ifeq ($(DB),sqlite)
TEST_DATABASE_URL := sqlite:///var/test.sqlite3
else
TEST_DATABASE_URL := $(PG_URL)
endif

.PHONY: demo test test-redis lint check-templates format-templates messages bench venv chromium axe postgres clean lock

# The exact, hashed versions of requirements/dev.txt (make lock), then the app itself.
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	@python=$$(.ci/find-python) && $$python -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	@touch $@

venv: $(VENV)/.installed

# Pin every dependency with its hashes: requirements/base.txt deploys, requirements/dev.txt adds the
# dev tools. Run after changing the dependencies in pyproject.toml; commit both files.
LOCK := $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.12 \
	--generate-hashes --no-header --quiet
lock: venv
	$(LOCK) -o requirements/base.txt
	$(LOCK) --group pyproject.toml:dev -o requirements/dev.txt

# Browser tests need Debian's chromium (Playwright cannot download its own browser here), and a
# Japanese font so that the screenshots show the Japanese pages and the language switch.
chromium:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing=" chromium"; \
	if command -v fc-list >/dev/null && [ -z "$$(fc-list :lang=ja 2>/dev/null)" ]; then missing="$$missing fonts-noto-cjk"; fi; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
				|| echo "could not install$$missing: the browser tests may skip or show no Japanese" >&2; \
		else \
			echo "missing for the browser tests:$$missing (Debian packages)" >&2; \
		fi; \
	fi

# axe-core (package.json) for the browser tests' accessibility checks.
axe:
	@if [ ! -f node_modules/axe-core/axe.min.js ]; then \
		if command -v npm >/dev/null; then \
			npm ci --no-audit --no-fund --silent \
				|| echo "npm ci failed: the accessibility checks will be skipped" >&2; \
		else \
			echo "npm is missing: the accessibility checks will be skipped" >&2; \
		fi; \
	fi

# The suite runs on the local PostgreSQL; start the cluster if it is installed and stopped.
postgres:
	@if [ "$(DB)" != sqlite ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		for version in $$(ls /etc/postgresql 2>/dev/null); do \
			pg_ctlcluster --skip-systemctl-redirect $$version main start || true; \
		done; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
		pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }; \
	fi

test: venv chromium axe postgres
	@mkdir -p var test-artifacts
	DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest $(PYTEST_ARGS)

test-redis: venv postgres
	@mkdir -p var
	REDIS_URL=$(REDIS_TEST_URL) DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest -m cache $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	@mkdir -p var
	DJANGO_DEBUG=1 DATABASE_URL=sqlite:///var/lint.sqlite3 $(VENV)/bin/mypy
	DJANGO_DEBUG=1 DATABASE_URL=sqlite:///var/lint.sqlite3 $(PY) manage.py makemigrations --check --dry-run
	@$(MAKE) --no-print-directory check-templates

# Templates: djade's layout, and no line past 120 characters (djade does not wrap lines).
TEMPLATES = $$(git ls-files '*.html')
TEMPLATE_WIDTH = 120
LONG_TEMPLATE_LINES = awk -v width=$(TEMPLATE_WIDTH) \
	'length > width {print FILENAME ":" FNR ": " length " characters"; n++} END {exit n > 0}'

check-templates: venv
	@status=0; \
	$(VENV)/bin/djade --target-version 6.1 --check $(TEMPLATES) || status=1; \
	$(LONG_TEMPLATE_LINES) $(TEMPLATES) || { echo "template lines past $(TEMPLATE_WIDTH) characters" >&2; status=1; }; \
	exit $$status

# djade exits 1 when it changed a file; the check after it fails if it could not format one.
format-templates: venv
	$(VENV)/bin/djade --target-version 6.1 $(TEMPLATES) || true
	$(VENV)/bin/djade --target-version 6.1 --check $(TEMPLATES)
	@$(LONG_TEMPLATE_LINES) $(TEMPLATES) || echo "wrap the lines above by hand (djade does not)" >&2

# Refresh the Japanese catalogue from the code and compile it; commit the .po and the .mo.
messages: venv
	@mkdir -p var
	DJANGO_DEBUG=1 DATABASE_URL=sqlite:///var/lint.sqlite3 $(PY) manage.py makemessages -l ja \
		--no-location --no-obsolete -i ".venv/*" -i "node_modules/*" -i "tests/*" -i "var/*" -i "staticfiles/*"
	msgfmt --check -o tracker/locale/ja/LC_MESSAGES/django.mo tracker/locale/ja/LC_MESSAGES/django.po

demo: venv
	@mkdir -p var
	DJANGO_DEBUG=1 $(PY) manage.py demo $(DEMO_ARGS)

bench: venv postgres
	DJANGO_DEBUG=1 $(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var test-artifacts node_modules
