#!/usr/bin/env bash
# Start a local PostgreSQL for the test suite and the benchmarks, idempotently.
# Run as root on Debian. Prints the SQLAlchemy URL of the test database on stdout (over TCP on 127.0.0.1;
# with --socket, over the cluster's unix socket, which any network namespace of this host reaches).
set -euo pipefail

PG_USER=sandbox
PG_PASSWORD=sandbox
PG_DB=sandbox_test
PG_PORT=5432
WAIT_SECONDS=${PG_WAIT_SECONDS:-60}

log() { echo "start-postgres: $*" >&2; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

# The newest installed cluster; Debian creates one ("main") with the package.
read -r PG_VERSION PG_CLUSTER _ < <(pg_lsclusters -h | sort -V | tail -n 1)
CONF_DIR=/etc/postgresql/${PG_VERSION}/${PG_CLUSTER}

# Loopback only: the test database must never be reachable from another machine.
if ! grep -q "^listen_addresses = '127.0.0.1'" "${CONF_DIR}/postgresql.conf"; then
    echo "listen_addresses = '127.0.0.1'" >>"${CONF_DIR}/postgresql.conf"
fi

# The test suite may run in a network namespace of its own (scripts/test does, beside its fresh Docker
# engine), where 127.0.0.1 is not this cluster's: it then connects over the unix socket, with a password
# like over TCP (Debian's default for local connections is peer, which maps no root to this role).
HBA="${CONF_DIR}/pg_hba.conf"
HBA_LINE="local   ${PG_DB}    ${PG_USER}    scram-sha-256"
hba_changed=0
if ! grep -qxF "$HBA_LINE" "$HBA"; then
    sed -i "0,/^local/s//${HBA_LINE//\//\\/}\n&/" "$HBA"
    grep -qxF "$HBA_LINE" "$HBA" || { log "could not add the socket rule to $HBA"; exit 1; }
    hba_changed=1
fi

if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
    log "starting cluster ${PG_VERSION}/${PG_CLUSTER}"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2
fi

if [ "$hba_changed" = 1 ]; then
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" reload >&2
fi

ready=0
for _ in $(seq 1 "$WAIT_SECONDS"); do
    if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
        ready=1
        break
    fi
    sleep 1
done
if [ "$ready" != 1 ]; then
    log "PostgreSQL did not accept connections on 127.0.0.1:${PG_PORT} within ${WAIT_SECONDS}s"
    exit 1
fi

# From /: the postgres user may not be allowed into the directory this script was started from.
psql_admin() { (cd / && runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtAX -p "$PG_PORT" "$@"); }

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '${PG_USER}'")" != 1 ]; then
    log "creating role ${PG_USER}"
    psql_admin -c "CREATE ROLE ${PG_USER} LOGIN PASSWORD '${PG_PASSWORD}'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '${PG_DB}'")" != 1 ]; then
    log "creating database ${PG_DB}"
    psql_admin -c "CREATE DATABASE ${PG_DB} OWNER ${PG_USER}"
fi

if [ "${1:-}" = --socket ]; then
    SOCKET_DIR="$(pg_conftool -s "$PG_VERSION" "$PG_CLUSTER" show unix_socket_directories 2>/dev/null | cut -d, -f1)"
    echo "postgresql+psycopg://${PG_USER}:${PG_PASSWORD}@/${PG_DB}?host=${SOCKET_DIR:-/var/run/postgresql}&port=${PG_PORT}"
else
    echo "postgresql+psycopg://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/${PG_DB}"
fi
