#!/bin/sh
# Starts PostgreSQL as Debian runs it (as user postgres) with its data in the container's
# private /tmp, its socket in /tmp, and no TCP listener.
set -e
mkdir -p /tmp/pg
chown postgres /tmp/pg
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
su postgres -s /bin/sh -c "$bin/initdb -D /tmp/pg >/tmp/initdb.log 2>&1"
exec su postgres -s /bin/sh -c "exec $bin/postgres -D /tmp/pg -k /tmp -c listen_addresses=''"
