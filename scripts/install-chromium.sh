#!/usr/bin/env bash
# The browser tests (tests/test_browser.py) drive Debian's Chromium through Playwright (no browser download:
# `playwright install` is never used). Installs the `chromium` package when /usr/bin/chromium is missing.
set -euo pipefail
CHROMIUM=${INTEGRATIONS_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$CHROMIUM is missing and this is not root on Debian: install Debian's chromium (apt-get install chromium)" \
       "or set INTEGRATIONS_CHROMIUM to a Chromium binary; the browser tests fail without it" >&2
  exit 1
fi
echo "installing Debian's chromium for the browser tests (once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "apt-get installed chromium but $CHROMIUM is still missing" >&2; exit 1; }
