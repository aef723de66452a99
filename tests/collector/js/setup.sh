#!/usr/bin/env bash
# Installs the pinned JavaScript SDKs (package-lock.json) with `npm ci` into a
# cache directory keyed by the sha256 of package-lock.json:
#   ${SEGDB_NODE_CACHE:-$HOME/.cache/segdb-node}/<sha256>/node_modules
# Idempotent: a second run with the same lock file does nothing but print.
# The last line on stdout is the absolute node_modules path; everything else
# goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lock="$here/package-lock.json"
cache_root="${SEGDB_NODE_CACHE:-$HOME/.cache/segdb-node}"

command -v node >/dev/null || { echo "setup.sh: node not found on PATH" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm not found on PATH" >&2; exit 1; }

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup.sh: node >= 20 required, found $(node --version)" >&2
  exit 1
fi

hash="$(sha256sum "$lock" | cut -d' ' -f1)"
dir="$cache_root/$hash"
stamp="$dir/.segdb-npm-ci-done"

if [ ! -f "$stamp" ] || [ ! -d "$dir/node_modules" ]; then
  mkdir -p "$cache_root"
  # Build in a temporary sibling and rename at the end, so an interrupted or
  # concurrent run never leaves a half-populated directory under $dir.
  tmp="$(mktemp -d "$cache_root/.tmp-$hash.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/package.json" "$lock" "$tmp/"
  echo "setup.sh: npm ci into $dir" >&2
  (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error 1>&2)
  # Sanity: the files the tests load must exist.
  for f in \
    node_modules/@segment/analytics-node/package.json \
    node_modules/@segment/analytics-next/dist/umd/index.js \
    node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js \
    node_modules/puppeteer-core/package.json \
    node_modules/@sparticuz/chromium/bin/chromium.br \
    node_modules/axe-core/axe.min.js; do
    [ -e "$tmp/$f" ] || { echo "setup.sh: missing $f after npm ci" >&2; exit 1; }
  done
  touch "$tmp/.segdb-npm-ci-done"
  rm -rf "$dir"
  if ! mv -T "$tmp" "$dir" 2>/dev/null; then
    # Another run won the race; use its result.
    [ -f "$stamp" ] || { echo "setup.sh: could not install into $dir" >&2; exit 1; }
  fi
  trap - EXIT
  rm -rf "$tmp"
fi

echo "$dir/node_modules"
