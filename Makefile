# Two commands on a fresh machine:
#   make run   - the product on its embedded default (SQLite, filesystem broker, Mixpanel sandbox)
#   make test  - the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# The demo project points at the sandbox on this server, so links and the sandbox URL follow PORT.
export SITE_URL ?= http://127.0.0.1:$(PORT)
# The demo polls the sandbox every few seconds so a request completes within a minute (production: 300 s, 6 h).
DEMO_ENV := GDPR_POLL_INITIAL_SECONDS=$${GDPR_POLL_INITIAL_SECONDS:-5} GDPR_POLL_MAX_SECONDS=$${GDPR_POLL_MAX_SECONDS:-30} \
	GDPR_DELETION_COALESCE_SECONDS=$${GDPR_DELETION_COALESCE_SECONDS:-5} MIXPANEL_BACKOFF_BASE_SECONDS=$${MIXPANEL_BACKOFF_BASE_SECONDS:-5}

.PHONY: run test venv dev-venv lint migrate demo worker web check-deploy clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed
dev-venv: $(VENV)/.dev-installed

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py demo_setup

# The web server and one Celery worker with embedded beat; Ctrl-C (or SIGTERM) stops both, once each
# (scripts/run_dev.py).
run: demo
	@echo "Starting the web server on http://127.0.0.1:$(PORT)/ and a Celery worker (embedded beat)."
	@exec env $(DEMO_ENV) $(PY) scripts/run_dev.py --port $(PORT)

test: dev-venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: dev-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# The deployment checks with your production environment; throwaway secrets fill in whatever is not set.
check-deploy: venv
	DJANGO_ENV=production \
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(60))')}" \
	FIELD_ENCRYPTION_KEYS="$${FIELD_ENCRYPTION_KEYS:-$$($(PY) -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')}" \
	AUDIT_CHAIN_KEY="$${AUDIT_CHAIN_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(40))')}" \
	ALLOWED_HOSTS="$${ALLOWED_HOSTS:-privacy.example.com}" \
	REDIS_URL="$${REDIS_URL:-redis://127.0.0.1:6379/0}" \
	$(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) var
