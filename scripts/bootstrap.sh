#!/usr/bin/env bash
# Set up this machine for Vigil from scratch: a virtualenv with every extra, and the
# services the tests use (Mosquitto on 127.0.0.1:1883, PostgreSQL on 127.0.0.1:5432),
# installed with apt-get where missing and started where stopped. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[edge,hub,dev]'

need_apt=()
command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
# deploy checks: `docker-compose config` and `systemd-analyze verify` validate the shipped files
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing system packages: ${need_apt[*]} (install them with apt-get as root)" >&2
  fi
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 1883; then
  echo "starting Mosquitto on 127.0.0.1:1883"
  mkdir -p /run/mosquitto /var/log/mosquitto 2>/dev/null || true
  chown mosquitto: /run/mosquitto /var/log/mosquitto 2>/dev/null || true
  if [ -f /etc/mosquitto/mosquitto.conf ]; then
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    mosquitto -d -p 1883
  fi
  for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done
fi

if ! port_open 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "starting PostgreSQL on 127.0.0.1:5432"
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 100); do port_open 5432 && break; sleep 0.1; done
fi
port_open 1883 || { echo "Mosquitto is not reachable on 127.0.0.1:1883" >&2; exit 1; }
port_open 5432 || echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will skip" >&2
