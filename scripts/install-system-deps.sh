#!/usr/bin/env bash
# Installs the system tools the test suite runs for real: Debian's prometheus (prometheus and promtool)
# and chromium (the demo page's browser tests drive it with Playwright; no browser is downloaded).
# kubectl, hadolint and shellcheck come from PyPI with the dev extra.
set -euo pipefail

command -v prometheus >/dev/null && command -v promtool >/dev/null && [ -x /usr/bin/chromium ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing prometheus and chromium with apt-get"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus chromium
