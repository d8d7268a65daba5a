#!/bin/sh
# Debian packages bastion uses: data (see shared/DATA.md), a browser and a database server for the tests.
# Installed only when missing and run as root; otherwise prints the command to run. Idempotent.
set -u

# apt_install PACKAGE WHAT-IS-LOST: install PACKAGE (refreshing the package lists once if the first try fails).
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q "$1" >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$1" >/dev/null; } || \
      echo "warning: could not install $1; $2" >&2
  else
    echo "note: $1 is not installed; as root run: apt-get install -y $1 ($2 without it)" >&2
  fi
}

[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
  apt_install dataset-fashion-mnist "Fashion-MNIST will be unavailable"
# Debian's Chromium renders the HTML report in the report test (a real headless browser).
command -v chromium >/dev/null 2>&1 || apt_install chromium "the HTML rendering test will be skipped"
# Debian's PostgreSQL server: the store tests start a throw-away cluster of their own (initdb + pg_ctl on a free
# port of 127.0.0.1, as the postgres user this package creates); bastion itself needs only a server URL.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
  apt_install postgresql "the PostgreSQL store tests will be skipped"
# bastion's IDS traffic generator (`bastion ids generate`, its end-to-end test): a virtual network in Linux network
# namespaces with real services and real attack tools. Without them the generator names the missing package and the
# end-to-end test is not run; the shipped snapshot needs none of them.
# (Where systemd runs, Debian starts the packages' own sshd and vsftpd on install; the generator never uses them: it
# starts its own, with throw-away configurations, inside its namespaces.)
for tool in "ip iproute2" "tcpdump tcpdump" "nmap nmap" "hping3 hping3" "hydra hydra" "slowhttptest slowhttptest" \
            "dnsmasq dnsmasq-base" "/usr/sbin/sshd openssh-server" "ssh openssh-client" "/usr/sbin/vsftpd vsftpd"; do
  set -- $tool
  command -v "$1" >/dev/null 2>&1 || apt_install "$2" "traffic generation (bastion ids generate) will be unavailable"
done
# tcpreplay: `bastion ids stream --replay` sends a capture through namespaces in real time (and its test).
command -v tcpreplay >/dev/null 2>&1 || apt_install tcpreplay "replayed real-time scoring will be unavailable"
exit 0
