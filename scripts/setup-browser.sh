#!/usr/bin/env bash
# Install the headless browser the report test renders report.html in (Debian's chromium,
# driven by Playwright without a browser download of its own), when it is missing and apt can
# install it. Quiet unless it installs; never fails the caller: without a browser the test
# itself fails with one line naming it.
set -uo pipefail
browser="${RAYDISTILL_CHROMIUM:-/usr/bin/chromium}"
[ -x "$browser" ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "setup: no $browser and no apt-get: tests/test_report_browser.py will fail (install Chromium)"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "setup: no $browser, and apt-get needs root: run apt-get install -y chromium"
    exit 0
  fi
fi
log="$(mktemp -t raydistill-apt.XXXXXX)"
echo "setup: installing chromium with apt-get (headless browser for the report test)"
if $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium >>"$log" 2>&1; then
  rm -f "$log"
else
  echo "setup: apt-get install chromium failed (log: $log):"
  tail -n 5 "$log"
fi
exit 0
