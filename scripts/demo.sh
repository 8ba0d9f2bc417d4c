#!/usr/bin/env bash
# The demo behind `make demo`: a real sync on the embedded default (data in
# ./davsync-data, remote in the folder ./davsync-remote), plus a second
# instance in ./davsync-data-b that shares the same remote.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p davsync --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/davsync"

say() { printf '\n$ %s\n' "$*"; }
run() { say "$*"; "$@"; }

run "$bin" init
printf '%%PDF-1.4\n%% davsync demo, %s\n' "$(date -u +%FT%TZ)" > davsync-demo.pdf
say "$bin" add davsync-demo.pdf --doc-id 10.1000/demo --label demo --collection examples
id=$("$bin" add davsync-demo.pdf --doc-id 10.1000/demo --label demo --collection examples)
echo "$id"
run "$bin" sync
run "$bin" --data ./davsync-data-b sync
run "$bin" --data ./davsync-data-b set "$id" --label "edited on instance b"
run "$bin" --data ./davsync-data-b sync
run "$bin" sync
run "$bin" ls
run "$bin" status
