#!/usr/bin/env bash
# Installs the programs the render tests drive (newsboat, chromium, w3m, java + vnu.jar) when
# missing.
# Idempotent: a second run installs nothing. Run from anywhere; .tools/ lands at the repo root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

# Program to look for -> Debian package that provides it.
declare -A wanted=(
  [newsboat]=newsboat
  [chromium]=chromium
  [w3m]=w3m
  [java]=default-jre-headless
)
missing=()
for program in "${!wanted[@]}"; do
  if ! command -v "$program" >/dev/null 2>&1; then
    missing+=("${wanted[$program]}")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends \
    "${missing[@]}"
fi

jar=.tools/node_modules/vnu-jar/build/dist/vnu.jar
if [ ! -f "$jar" ]; then
  echo "installing: vnu-jar (npm, into .tools/)"
  # --ignore-scripts: the postinstall only fetches a Java runtime, and we install our own.
  npm install --no-audit --no-fund --ignore-scripts --prefix .tools vnu-jar
fi

echo "system deps ready"
