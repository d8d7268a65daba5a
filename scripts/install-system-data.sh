#!/bin/sh
# Debian packages bastion uses: data (see shared/DATA.md), a browser and a database server for the tests.
# Installed only when missing and run as root; otherwise prints the command to run. Idempotent.
set -u
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
      echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST will be unavailable" >&2
  else
    echo "note: Fashion-MNIST is not installed; as root run: apt-get install -y dataset-fashion-mnist" >&2
  fi
fi
# Debian's Chromium renders the HTML report in the report test (a real headless browser).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q chromium >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; } || \
      echo "warning: could not install chromium; the HTML rendering test will be skipped" >&2
  else
    echo "note: chromium is not installed; as root run: apt-get install -y chromium" >&2
  fi
fi
# Debian's PostgreSQL server: the store tests start a throw-away cluster of their own (initdb + pg_ctl on a free
# port of 127.0.0.1, as the postgres user this package creates); bastion itself needs only a server URL.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q postgresql >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null; } || \
      echo "warning: could not install postgresql; the PostgreSQL store tests will be skipped" >&2
  else
    echo "note: the PostgreSQL server is not installed; as root run: apt-get install -y postgresql" >&2
  fi
fi
exit 0
