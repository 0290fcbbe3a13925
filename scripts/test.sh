#!/usr/bin/env bash
# Quick start, command 2: every test layer, on real PostgreSQL 15 clusters.
#   1. unit tests and #[pg_test] tests inside a pgrx-managed server (cargo pgrx test)
#   2. integration tests (tests/) on clusters the harness starts
#   3. the differential harness against Debian's real pgAudit 1.7 (pgaudit_compat/)
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
source scripts/lib.sh

echo "== unit and #[pg_test] tests =="
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root: run the test server as the postgres OS user.
  pgdata="$PWD/target/pgrx-test-pgdata"
  rm -rf "$pgdata"
  mkdir -p "$pgdata"
  chown postgres: "$pgdata"
  cargo pgrx test pg15 --runas postgres --pgdata "$pgdata"
else
  cargo pgrx test pg15
fi

echo "== install for integration tests =="
install_extension

echo "== integration tests =="
cargo test -p pgaudit_siem_tests

echo "== pgAudit compatibility (differential) tests =="
# The corpus prints its "N/M identical" summary and any diffs.
cargo test -p pgaudit_compat --test corpus -- --nocapture
cargo test -p pgaudit_compat --test settings --test extended_protocol --test deviations --test errors

echo "== Debian package (build, apt install on a clean root, use) =="
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/package-test.sh
else
  echo "skipped: scripts/package-test.sh installs into the system's PostgreSQL and needs root"
fi
