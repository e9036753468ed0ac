#!/usr/bin/env bash
# Installs the programs the render tests drive (newsboat, chromium, w3m, java + vnu.jar) and
# PostgreSQL for the store tests, when missing.
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

# PostgreSQL for the store tests on a real server. Debian keeps initdb and pg_ctl off PATH,
# in /usr/lib/postgresql/<version>/bin, where the tests look too.
have_postgres() {
  local program
  for program in initdb pg_ctl; do
    if ! command -v "$program" >/dev/null 2>&1 \
      && ! compgen -G "/usr/lib/postgresql/*/bin/$program" >/dev/null; then
      return 1
    fi
  done
}
if ! have_postgres; then
  echo "installing: postgresql"
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends \
    postgresql
fi

echo "system deps ready"
