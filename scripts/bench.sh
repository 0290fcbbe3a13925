#!/usr/bin/env bash
# Builds pgaudit_siem in release mode, installs it, and runs the benchmarks.
# Arguments are passed to the runner, e.g. `bash scripts/bench.sh overhead --rounds 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
source scripts/lib.sh
install_extension --release >&2
cargo run --quiet --release -p pgaudit_siem_bench -- "$@"
