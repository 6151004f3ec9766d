#!/usr/bin/env bash
# WebSocket relay benchmark: messages per second through Tollgate (metering off and
# on) against a direct connection, a raw byte copy and nginx, in one run.
# Not a test: it asserts nothing about speed; it prints ratios.
#
#   bash bench/websocket.sh                      # defaults: 16 connections x 100000 messages of 64 B
#   bash bench/websocket.sh --size 4096 --rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi
cargo build --release --locked -p tollgate -p tollgate-bench
exec target/release/tollgate-bench websocket "$@"
