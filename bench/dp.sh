#!/usr/bin/env bash
# Distribution point benchmark: a pull of a 1 GiB package into an empty DP beside
# site-to-site replication, and curl downloads from the DP beside nginx serving the same
# file from a plain directory, with the DP's peak RSS. Installs Debian's nginx if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    apt-get update -q && apt-get install -y -q nginx
fi
command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl; }
cargo build --release -q -p site-server -p dist-point -p bench
exec target/release/bench dp --mib "${MIB:-1024}" --runs "${RUNS:-3}" --downloads "${DOWNLOADS:-5}"
