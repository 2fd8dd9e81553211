#!/usr/bin/env bash
# Installs the Debian packages that are missing. Packages: those named as arguments (nothing else),
# else those listed in ci/apt-packages.txt plus cargo-nextest if absent (what the tests need).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if (($#)); then
  wanted=("$@")
else
  mapfile -t wanted < <(grep -v '^\s*#' "$here/apt-packages.txt" | grep -v '^\s*$')
fi
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "== installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Named packages are a script's own extras (bench-peers: etcd): no test runner needed for those.
if ((! $#)); then
  command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
fi
