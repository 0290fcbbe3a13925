#!/usr/bin/env bash
# Writes sql/generated/pgaudit_siem.sql: the install script cargo-pgrx generated for the
# installed build, without pgrx's comments (they carry source line numbers). The test
# tests/tests/sql_surface.rs compares the installed script with this copy, so every
# change to the SQL surface is a deliberate, reviewed change of this file (and, once a
# release is out, comes with an upgrade script).
# Usage: bash scripts/install.sh (or the test command) first, then this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
script="$("$PG_CONFIG" --sharedir)/extension/pgaudit_siem--${version}.sql"
grep -v -e '^--' -e '^/\*' -e '^\*' -e '^ \*' "$script" | cat -s > sql/generated/pgaudit_siem.sql
echo "wrote sql/generated/pgaudit_siem.sql from $script"
