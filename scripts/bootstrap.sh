#!/usr/bin/env bash
# Installs what the platform needs on Debian 12: system packages (only those missing), then the
# virtualenv with the pinned requirements. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
[ -x /usr/sbin/dovecot ] || packages+=(dovecot-imapd)
[ -x /usr/lib/dovecot/lmtp ] || packages+=(dovecot-lmtpd)
[ -x /usr/sbin/postfix ] || packages+=(postfix)
command -v mbsync >/dev/null 2>&1 || packages+=(isync)
command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
[ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)  # tests/emailplatform/test_pgbouncer.py
command -v runuser >/dev/null 2>&1 || packages+=(util-linux)
command -v setfacl >/dev/null 2>&1 || packages+=(acl)  # make run as root, checkout under /root
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)

if [ ${#packages[@]} -gt 0 ]; then
  echo "Installing system packages: ${packages[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # Postfix runs as a private instance with a config of its own: no system main.cf, no question.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  # Debian's packages start their own system-wide services; ours are private instances.
  $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
  for unit in postgresql redis-server dovecot postfix pgbouncer; do
    $SUDO service "$unit" stop >/dev/null 2>&1 || true
  done
  $SUDO systemctl disable postfix >/dev/null 2>&1 || $SUDO update-rc.d postfix disable >/dev/null 2>&1 || true
  $SUDO systemctl disable pgbouncer >/dev/null 2>&1 || $SUDO update-rc.d pgbouncer disable >/dev/null 2>&1 || true
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# `bootstrap.sh test` adds the test and lint tools (requirements-test.txt) to what production runs.
install() {  # install() FILE STAMP: pip-install FILE unless it is unchanged since the last time
  if [ ! -f "$2" ] || ! cat requirements.txt "$1" | cmp -s - "$2"; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r "$1"
    cat requirements.txt "$1" >"$2"
  fi
}
install requirements.txt .venv/.requirements.done
if [ "${1:-}" = "test" ]; then
  install requirements-test.txt .venv/.requirements-test.done
fi
