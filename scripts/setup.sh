#!/usr/bin/env bash
# Installs what building davsync needs beyond the Rust toolchain itself:
# a clang with a wasm32 backend (SQLite inside the component is C) and the
# wasm targets from rust-toolchain.toml. Safe to run again; quiet when done.
set -euo pipefail

need_apt=()
command -v clang-19 >/dev/null 2>&1 || need_apt+=(clang-19)
command -v llvm-ar >/dev/null 2>&1 || command -v llvm-ar-19 >/dev/null 2>&1 || need_apt+=(llvm-19)
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} (Debian packages)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# rustup reads rust-toolchain.toml and installs the listed targets on first use.
if command -v rustup >/dev/null 2>&1; then
  cd "$(dirname "$0")/.."
  rustup show active-toolchain >/dev/null
  for t in wasm32-unknown-unknown wasm32-wasip2; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  done
fi
