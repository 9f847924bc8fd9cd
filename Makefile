# The two commands: `make run` (set up everything, load demo data, serve admin + API + worker)
# and `make test` (the whole suite). Both work on a fresh clone with no standard input.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_CUSTOMERS ?= 5000
DEMO_EVENTS ?= 300000
DEMO_TRAIN_EPOCHS ?= 3
# gunicorn worker processes of `make serve`; each holds its own in-memory similarity graph (README, issue 20)
WEB_WORKERS ?= 3

.PHONY: run test install redis test-tools migrate demo serve bench db-stop clean

# `make run` and the benches are local development: DEBUG generates the keys once under var/secrets/.
# Anywhere else every key comes from the environment (README "Configuration"); the tests set theirs
# in pytest.ini.
run demo serve migrate bench: export DEBUG ?= 1

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# Chart.js for the admin's charts, from the npm registry at the version package-lock.json pins.
NODE_STAMP := frontend/node_modules/.package-lock.json
$(NODE_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

install: $(STAMP) $(NODE_STAMP)

redis:
	@$(PY) -c "import redis,sys; redis.Redis.from_url('redis://127.0.0.1:6379/0', socket_connect_timeout=1).ping()" 2>/dev/null \
	  || { echo "starting redis-server on 127.0.0.1:6379"; redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no; sleep 0.5; }

migrate: install
	$(PY) manage.py migrate --noinput -v 0

demo: migrate
	$(PY) manage.py ensure_admin
	$(PY) manage.py generate_events --if-empty --customers $(DEMO_CUSTOMERS) --events $(DEMO_EVENTS) --seed 42
	$(PY) manage.py build_profiles --if-missing
	$(PY) manage.py demo_segments --if-missing
	$(PY) manage.py fit_clv --if-missing
	$(PY) manage.py train --if-missing --queue --epochs $(DEMO_TRAIN_EPOCHS)

serve: install redis
	$(PY) manage.py collectstatic --noinput -v 0
	@echo "Portrait: admin http://$(HOST):$(PORT)/admin/  API docs http://$(HOST):$(PORT)/api/docs/  (Ctrl-C stops)"
	@trap 'kill 0' INT TERM EXIT; \
	  $(VENV)/bin/celery -A config worker -B -Q default,ingest,profiles,segments,training -c 2 -l INFO & \
	  $(VENV)/bin/gunicorn config.wsgi -b $(HOST):$(PORT) -w $(WEB_WORKERS) --access-logfile - & \
	  wait

run: install redis demo serve

# Debian packages the tests need: Chromium (never a downloaded browser) and CJK fonts for the browser
# tests, qemu-user (a CPU without AVX-512) and objdump for the embedded database's portability test.
TEST_PACKAGES := chromium fonts-noto-cjk qemu-user binutils
test-tools:
	@test -x /usr/bin/chromium && fc-list 2>/dev/null | grep -qi "noto sans cjk" && command -v qemu-x86_64 >/dev/null \
	  && command -v objdump >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES); \
	  else echo "the tests need: sudo apt-get install $(TEST_PACKAGES)"; exit 1; fi; }

test: install redis test-tools
	$(PY) -m pytest -q

bench: install redis migrate
	$(PY) bench/ingest.py --events 1000000
	$(PY) bench/ingest_api.py
	$(PY) bench/build_profiles.py
	$(PY) bench/refresh_latency.py
	$(PY) bench/similarity.py
	$(PY) bench/api_load.py
	$(PY) bench/erasure.py
	$(PY) bench/clv_cdnow.py
	$(PY) bench/demand.py

db-stop:
	-$(PY) -c "from config.embedded_db import embedded_server_stop; embedded_server_stop('var/pgdata')"

clean: db-stop
	rm -rf var $(VENV) frontend/node_modules
