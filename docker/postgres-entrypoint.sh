#!/bin/sh
# The postgres stand-in's entrypoint (see `standins`): on first start, a cluster in $PGDATA
# with POSTGRES_USER (password POSTGRES_PASSWORD) and database POSTGRES_DB, as the official
# image makes, listening on every address; then the command (postgres and its arguments)
# as PID 1, run by the postgres user.
set -eu
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "${POSTGRES_PASSWORD:?the postgres stand-in needs POSTGRES_PASSWORD}" > /tmp/pwfile
  chown postgres /tmp/pwfile
  setpriv --reuid=postgres --regid=postgres --init-groups initdb -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # Single-user mode exits 0 whatever the statement did: look for its ERROR.
    made="$(echo "CREATE DATABASE \"$db\" OWNER \"$user\";" \
      | setpriv --reuid=postgres --regid=postgres --init-groups postgres --single -D "$PGDATA" postgres 2>&1)"
    case "$made" in *ERROR*) echo "$made" >&2; exit 1 ;; esac
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
