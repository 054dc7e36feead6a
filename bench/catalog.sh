#!/usr/bin/env bash
# Catalog sync benchmark: a real Debian Packages index (apt's own copy under
# /var/lib/apt/lists, or INDEX=FILE) synced at the top of CEN -> P01 -> S01: first sync,
# delta size, time until the third tier has it, unchanged re-sync.
set -euo pipefail
cd "$(dirname "$0")/.."
INDEX="${INDEX:-/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4}"
if [ ! -f "$INDEX" ]; then
    echo "fetching the Debian bookworm main index (apt-get update)" >&2
    apt-get update -qq
fi
cargo build --release -q -p site-server -p bench
exec target/release/bench catalog --index "$INDEX" --runs "${RUNS:-3}"
