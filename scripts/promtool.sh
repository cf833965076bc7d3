#!/usr/bin/env bash
# Provides build/tools/promtool (Prometheus's rule checker) without installing Prometheus:
# downloads Debian's prometheus package and extracts only promtool. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/tools/promtool
[[ -x $out ]] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } )
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
mkdir -p build/tools
cp "$tmp/x/usr/bin/promtool" "$out"
"$out" --version | head -n 1
