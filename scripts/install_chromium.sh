#!/usr/bin/env bash
# The browser tests (tests/browser) drive Debian's chromium through Playwright (pip package `playwright`, in the dev
# extra). Playwright's own browser download (`playwright install`) cannot work on a closed network, so this installs
# the Debian package when /usr/bin/chromium is missing: as root directly, otherwise with passwordless sudo only.
# It never stops the set-up: without chromium the browser tests skip with one line saying how to install it, and in
# CI (where CI is set) they fail instead, so CI never skips them silently. Used by `make test`.
set -uo pipefail
CHROMIUM="${LLMLAB_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "llmlab: no $CHROMIUM and no apt-get here: install chromium for the browser tests (they skip without it)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "llmlab: no $CHROMIUM; the browser tests need it: sudo apt-get install chromium (they skip without it)"
  exit 0
fi
echo "llmlab: installing Debian's chromium for the browser tests (about 30 s)"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
         --no-install-recommends chromium >/dev/null; }; then
  echo "llmlab: apt-get could not install chromium; the browser tests will say so (and fail in CI)"
fi
exit 0
