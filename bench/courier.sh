#!/usr/bin/env bash
# Courier benchmark: export and import (with full verification) of a 1 GiB package beside
# `cp -r` of the same bytes, with the peak RSS of both commands.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p site-server -p bench
exec target/release/bench courier --mib "${MIB:-1024}" --runs "${RUNS:-3}"
