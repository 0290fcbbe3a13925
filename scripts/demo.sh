#!/usr/bin/env bash
# Quick start, command 1: build and install pgaudit_siem, run it on a throwaway
# PostgreSQL 15 cluster, and show what it produces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
source scripts/lib.sh
install_extension
cargo run --quiet -p pgaudit_siem_tests --bin demo
