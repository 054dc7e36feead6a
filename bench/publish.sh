#!/usr/bin/env bash
# Publish benchmark: a 1 GiB mixed tree through `site-server package publish`, beside
# `tar | zstd -3 -T0` and single-thread BLAKE3, in the same run. Needs zstd and tar.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v zstd >/dev/null || { echo "install zstd (apt-get install zstd)" >&2; exit 2; }
cargo build --release -q -p site-server -p bench
TREE=${TREE:-/tmp/siterep-bench-tree}
exec target/release/bench publish --tree "$TREE" --mib "${MIB:-1024}" --runs "${RUNS:-5}"
