#!/usr/bin/env bash
# Shows that the Debian package alone gives a working extension: builds it
# (scripts/package.sh), removes the cargo-installed files, `apt install`s the .deb,
# and on a throwaway cluster creates the extension, upgrades it from 0.1.0, captures and
# delivers an event to the packaged receiver, and verifies the received chain with the
# packaged verifier. Removes the package and reinstalls the development build at the end.
# Run by scripts/test.sh (root only: it installs into the system's PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source scripts/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "package-test: needs root (apt install)" >&2; exit 1; }

deb=$(bash scripts/package.sh | tail -1)
echo "== built $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Depends:/p'

work=$(mktemp -d /tmp/pgaudit_siem-package-XXXXXX)
chown postgres: "$work"
pgdata="$work/data"
cleanup() {
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl stop -m immediate -D "$pgdata" >/dev/null 2>&1 || true
  [ -n "${receiver_pid:-}" ] && kill "$receiver_pid" 2>/dev/null || true
  dpkg -r postgresql-15-pgaudit-siem >/dev/null 2>&1 || true
  # Back to the development build the other tests use.
  install_extension >/dev/null 2>&1 || echo "package-test: reinstalling the development build failed" >&2
  rm -rf "$work"
}
trap cleanup EXIT

# A clean root: nothing of the extension left from cargo or an earlier package.
dpkg -r postgresql-15-pgaudit-siem >/dev/null 2>&1 || true
rm -f "$("$PG_CONFIG" --pkglibdir)/pgaudit_siem.so" "$("$PG_CONFIG" --sharedir)"/extension/pgaudit_siem*
DEBIAN_FRONTEND=noninteractive apt-get install -y "$PWD/$deb" >/dev/null
echo "== installed files"
dpkg -L postgresql-15-pgaudit-siem | grep -E 'pgaudit_siem(\.so|\.control|--)|/usr/bin/' 
test -x /usr/bin/pgaudit_siem_receiver && test -x /usr/bin/pgaudit_siem_verify

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb --no-sync --auth=trust -U postgres -D "$pgdata" >/dev/null
cat >> "$pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
shared_preload_libraries = 'pgaudit_siem'
pgaudit_siem.delivery_retry_base = '20ms'
CONF
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl start -w -l "$work/server.log" -D "$pgdata" >/dev/null
received="$work/received.ndjson"
/usr/bin/pgaudit_siem_receiver --port "$rport" --out "$received" >"$work/receiver.log" 2>&1 &
receiver_pid=$!
psql() { /usr/bin/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
for _ in $(seq 100); do psql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done

psql -d postgres -c "CREATE EXTENSION pgaudit_siem" -c "SELECT pgaudit_siem.version()"
# The package's upgrade script, from a 0.1.0 install (whose frozen script the package
# does not ship: it is placed here the way a 0.1.0 package had installed it).
install -m 0644 sql/pgaudit_siem--0.1.0.sql "$("$PG_CONFIG" --sharedir)/extension/"
psql -d postgres -c "CREATE DATABASE old"
psql -d old -c "CREATE EXTENSION pgaudit_siem VERSION '0.1.0'" -c "ALTER EXTENSION pgaudit_siem UPDATE" \
  -tA -c "SELECT extversion FROM pg_extension WHERE extname = 'pgaudit_siem'"
psql -d postgres <<SQL
CREATE TABLE t (n int, secret text);
SELECT pgaudit_siem.track('t', 'orgs', '{secret}');
SELECT pgaudit_siem.configure('http://127.0.0.1:$rport/siem', '{}', NULL, 'ndjson');
SELECT pgaudit_siem.enable();
INSERT INTO t VALUES (1, 'pw'), (2, 'pw');
SQL
for _ in $(seq 300); do
  grep -q '"table":"t"' "$received" 2>/dev/null && break
  sleep 0.1
done
grep -q '"table":"t"' "$received" || { echo "package-test: no event reached the receiver" >&2; cat "$work/server.log" >&2; exit 1; }
if grep -q '"pw"' "$received"; then echo "package-test: an excluded column was delivered" >&2; exit 1; fi
/usr/bin/pgaudit_siem_verify "$received"
echo "package-test: OK"
