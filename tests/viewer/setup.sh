#!/usr/bin/env bash
# Idempotent set-up for the OHIF viewer test (tests/test_viewer_ohif.py calls it; quick when done).
#
#   .cache/ohif/dist          prebuilt OHIF Viewer v3 from `npm pack @ohif/app@$OHIF_VERSION`,
#                             without ort/, dicom-microscopy-viewer/ and *.map (PEERS.md: ~49 MB)
#   .cache/viewer-node        npm puppeteer-core (drives Debian chromium; no browser download)
#
# Needs node/npm and chromium from Debian (the Makefile `system` target installs them; this script
# installs them too when missing and we are root, so the test command stays self-sufficient).
set -euo pipefail

OHIF_VERSION=3.13.2
PUPPETEER_VERSION=24.43.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${NODULETRACK_TEST_CACHE:-$repo/.cache}"

missing=""
command -v node >/dev/null || missing="$missing nodejs"
command -v npm >/dev/null || missing="$missing npm"
command -v chromium >/dev/null || missing="$missing chromium"
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "viewer setup: missing Debian packages:$missing (run as root or: apt-get install$missing)" >&2
    exit 1
  fi
  echo "viewer setup: installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROME_DOWNLOAD=1

# OHIF prebuilt dist, packed once. A marker file records the version so a bump refetches.
ohif="$cache/ohif"
if [ "$(cat "$ohif/VERSION" 2>/dev/null || true)" != "$OHIF_VERSION" ]; then
  echo "viewer setup: fetching @ohif/app@$OHIF_VERSION" >&2
  rm -rf "$ohif" "$ohif.tmp"
  mkdir -p "$ohif.tmp"
  (cd "$ohif.tmp" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
  tar -xzf "$ohif.tmp"/ohif-app-*.tgz -C "$ohif.tmp" package/dist
  rm -rf "$ohif.tmp/package/dist/ort" "$ohif.tmp/package/dist/dicom-microscopy-viewer"
  find "$ohif.tmp/package/dist" -name '*.map' -delete
  mv "$ohif.tmp/package/dist" "$ohif.tmp/dist"
  rm -rf "$ohif.tmp/package" "$ohif.tmp"/ohif-app-*.tgz
  echo "$OHIF_VERSION" > "$ohif.tmp/VERSION"
  mv "$ohif.tmp" "$ohif"
fi

# puppeteer-core, installed once into its own prefix.
node_dir="$cache/viewer-node"
if [ "$(cat "$node_dir/VERSION" 2>/dev/null || true)" != "$PUPPETEER_VERSION" ]; then
  echo "viewer setup: installing puppeteer-core@$PUPPETEER_VERSION" >&2
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  (cd "$node_dir" && echo '{"private": true}' > package.json \
     && npm install --silent --no-save --no-package-lock "puppeteer-core@$PUPPETEER_VERSION" >/dev/null)
  echo "$PUPPETEER_VERSION" > "$node_dir/VERSION"
fi

echo "$ohif/dist"
