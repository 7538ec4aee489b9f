#!/bin/sh
# Writes pgbouncer's configuration from the environment and runs it in the foreground.
# Transaction pooling: a server connection is lent to a client for one transaction, so
# PostgreSQL sees PGBOUNCER_POOL_SIZE connections however many the platform's processes open.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
dir=/tmp/pgbouncer
mkdir -p "$dir"
umask 077
printf '"emailplatform" "%s"\n' "$POSTGRES_PASSWORD" >"$dir/userlist.txt"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
emailplatform = host=${POSTGRES_HOST:-postgres} port=${POSTGRES_PORT:-5432} dbname=emailplatform
[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = ${PGBOUNCER_POOL_SIZE:-20}
reserve_pool_size = ${PGBOUNCER_RESERVE_POOL_SIZE:-5}
max_client_conn = ${PGBOUNCER_MAX_CLIENT_CONN:-1000}
max_db_connections = ${PGBOUNCER_MAX_DB_CONNECTIONS:-40}
server_reset_query =
ignore_startup_parameters = extra_float_digits
INI
exec pgbouncer "$dir/pgbouncer.ini"
