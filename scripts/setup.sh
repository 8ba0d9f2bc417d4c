#!/usr/bin/env bash
# Installs what building and testing davsync needs beyond the Rust toolchain:
# - a clang with a wasm32 backend (SQLite inside the component is C) and the
#   wasm targets from rust-toolchain.toml;
# - the real WebDAV servers the end-to-end tests run on 127.0.0.1
#   (tests/all/servers.rs): apache2 (binary and modules only: the system
#   service is stopped and disabled), rclone, and a Python venv with wsgidav.
# Safe to run again; quiet and fast (well under a second) when done.
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Debian's python3 with its venv module (not whatever python3 is first on PATH):
# the venv must outlive pyenv or other shims.
sys_python=/usr/bin/python3
[ -x "$sys_python" ] || sys_python="$(command -v python3 || true)"

need_apt=()
command -v clang-19 >/dev/null 2>&1 || need_apt+=(clang-19)
command -v llvm-ar >/dev/null 2>&1 || command -v llvm-ar-19 >/dev/null 2>&1 || need_apt+=(llvm-19)
[ -x /usr/sbin/apache2 ] || need_apt+=(apache2)
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
if [ -z "$sys_python" ]; then
  need_apt+=(python3 python3-venv)
  sys_python=/usr/bin/python3
elif ! "$sys_python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  # policy-rc.d exit 101 keeps the package scripts from starting services
  # (apache2 would otherwise start on port 80 and stay enabled).
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
  [ -z "$made_policy" ] || $sudo rm -f "$policy"
  # The tests start their own apache2 with their own config: the packaged
  # service must not run (it would hold port 80 and the www-data lock dirs).
  if [ -x /usr/sbin/apache2 ]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now apache2 >/dev/null 2>&1 || true
    else
      $sudo service apache2 stop >/dev/null 2>&1 || true
      command -v update-rc.d >/dev/null 2>&1 && $sudo update-rc.d apache2 disable >/dev/null 2>&1 || true
    fi
  fi
fi

# wsgidav (+ cheroot) in a venv of its own; tests/servers/wsgidav_serve.py runs
# with its python. A stamp of the pinned requirements makes re-runs instant.
venv="${DAVSYNC_VENV:-$HOME/.cache/davsync-venv}"
py_reqs="wsgidav==4.4.0 cheroot==11.1.2"
if [ "$(cat "$venv/.davsync-reqs" 2>/dev/null)" != "$py_reqs" ] || [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the Python venv $venv ($py_reqs)" >&2
  mkdir -p "$(dirname "$venv")"
  "$sys_python" -m venv "$venv"
  # shellcheck disable=SC2086 # word splitting of the requirement list is wanted
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $py_reqs
  "$venv/bin/python" -c 'import wsgidav, cheroot'
  echo "$py_reqs" >"$venv/.davsync-reqs"
fi

# rustup reads rust-toolchain.toml and installs the listed targets on first use.
if command -v rustup >/dev/null 2>&1; then
  cd "$(dirname "$0")/.."
  rustup show active-toolchain >/dev/null
  for t in wasm32-unknown-unknown wasm32-wasip2; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  done
fi

# --- issue 9: wasmtime-cli for `wasmtime serve` (the deployable component's
# tests run it). The same version as the wasmtime crate (host/Cargo.toml);
# built once into ~/.cache so CI caches it; skipped when present.
wasmtime_version="48.0.8"
tools="${DAVSYNC_TOOLS:-$HOME/.cache/davsync-tools}"
if ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -q "^wasmtime $wasmtime_version\b"; then
  echo "setup: installing wasmtime-cli $wasmtime_version into $tools (several minutes, once)" >&2
  CARGO_TARGET_DIR="$tools/target" cargo install -q wasmtime-cli --version "$wasmtime_version" --locked --root "$tools"
fi
# --- end issue 9
