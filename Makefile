# The two commands: `make run` and `make test`. Both install what they need first.
PY := .venv/bin/python
SERVICES := $(PY) scripts/devservices.py
PYTEST_WORKERS ?= 2

.PHONY: run test lint format bootstrap bootstrap-test bench-ingest bench-ingest-one bench-imap bench-imap-pool bench-imap-identity bench-gmail bench-gmail-writeback bench-api bench-gmail-push bench-smtp bench-webhooks audit bench-object-storage bench-many-accounts

bootstrap:
	scripts/bootstrap.sh

bootstrap-test:
	scripts/bootstrap.sh test

run: bootstrap
	$(SERVICES) exec --dir .local -- $(PY) scripts/run_platform.py

lint: bootstrap-test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: bootstrap-test
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test: lint
	$(SERVICES) exec --temp -- .venv/bin/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The chaos suite (not part of `make test`): the platform's real processes with production
# timeouts under faults; a table of times to converge. Options: CHAOS_ARGS="--messages 6000".
.PHONY: chaos
chaos: bootstrap
	$(SERVICES) exec --temp --durable -- $(PY) scripts/chaos.py $(CHAOS_ARGS)

bench-ingest: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/ingest.py $(BENCH_ARGS)

# The media storage on the local disk against S3 (moto's server, or --endpoint).
bench-object-storage: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/object_storage.py $(BENCH_ARGS)

# Storing the one message an IDLE notice brings: statements sent (round trips) and time.
bench-ingest-one: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/ingest_one.py $(BENCH_ARGS)

bench-imap: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/imap_sync.py $(BENCH_ARGS)

# Logins saved by the IMAP session pool: a burst of incremental syncs without and with it.
bench-imap-pool: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/imap_pool.py $(BENCH_ARGS)

# A UIDVALIDITY change of a 10,000-message folder: bodies downloaded and seconds, with the
# server's ids (X-GUID), with headers only, and a plain re-download as the baseline.
bench-imap-identity: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/imap_identity.py $(BENCH_ARGS)

# Gmail full and history sync of 10,000 messages against the local Gmail API (a process of its
# own), next to a bare google-api-python-client list + batched get; requests vs the minimum.
bench-gmail: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/gmail_sync.py $(BENCH_ARGS)

# Gmail write-back against the local Gmail API: a change's and a send's latency, and their parts.
bench-gmail-writeback: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/gmail_writeback.py $(BENCH_ARGS)

bench-api: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/api.py $(BENCH_ARGS)

bench-gmail-push: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/gmail_push.py $(BENCH_ARGS)

# Repeats issue 12's attacks against the production server (gunicorn, DEBUG off) on private
# services and prints a table; exits 1 if any check fails.
audit: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) scripts/audit.py

# 2,000 messages through the outbox API to a local SMTP server (aiosmtpd), API call to "sent",
# next to a bare smtplib loop over one connection; the send path and the path with the Sent
# copy. Options: BENCH_ARGS="--paths send --rounds 3".
bench-smtp: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/smtp_send.py $(BENCH_ARGS)

# 5,000 change events delivered by a real webhook worker to a local receiver (first commit to
# last POST received), next to a bare requests loop posting the same bodies. Options:
# BENCH_ARGS="--events 20000 --per-commit 1".
bench-webhooks: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/webhooks.py $(BENCH_ARGS)

# One asyncio IDLE listener holding many mailboxes on a Dovecot of its own (high-performance
# settings): RSS per mailbox, database connections, idle CPU, connect-all, APPEND->trigger,
# re-hold after a restart. Options: BENCH_ARGS="--mailboxes 10000".
.PHONY: bench-idle-scale
bench-idle-scale: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/idle_scale.py $(BENCH_ARGS)

# N accounts (Dovecot users, small mailboxes) whose full syncs one beat job starts at once, on real
# sync and message workers; all complete, nothing duplicated, peaks and time against N. Options:
# BENCH_ARGS="--accounts 100,300 --messages 20".
bench-many-accounts: bootstrap-test
	$(SERVICES) exec --temp -- $(PY) bench/many_accounts.py $(BENCH_ARGS)
