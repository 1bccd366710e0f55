#!/bin/sh
# First start: initdb with the POSTGRES_USER as superuser (password authentication over TCP,
# as the official image does), then the POSTGRES_DB database; every start: the server in the
# foreground. Arguments are passed to `postgres` (e.g. -p PORT -c listen_addresses=...).
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" \
            | postgres --single -D "$PGDATA" -j template1 >/dev/null
    fi
fi
exec postgres -D "$PGDATA" -k /tmp "$@"
