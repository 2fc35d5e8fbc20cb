#!/usr/bin/env bash
# Makes sure what warden's demo and tests talk to is installed and running:
# RabbitMQ (127.0.0.1:5672, guest/guest) and PostgreSQL (127.0.0.1:5432, trust
# auth, database `test`). Installs from Debian's packages when missing and
# starts a stopped service; leaves a running one exactly as it is.
set -euo pipefail

say() { echo "ensure-services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port, seconds, name
  for _ in $(seq 1 "$(( $2 * 4 ))"); do port_open "$1" && return 0; sleep 0.25; done
  say "$3 did not come up on port $1 within $2s"; return 1
}

# RabbitMQ
if ! port_open 5672; then
  if ! command -v rabbitmq-server >/dev/null; then
    say "installing rabbitmq-server"; apt_install rabbitmq-server
  fi
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached
  wait_port 5672 90 RabbitMQ
  as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

# PostgreSQL (token store tests)
if ! port_open 5432; then
  if ! command -v pg_ctlcluster >/dev/null; then
    say "installing postgresql"; apt_install postgresql
  fi
  say "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432 60 PostgreSQL
fi
if command -v psql >/dev/null && ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
  say "creating database test"
  as_root su postgres -c "psql -c 'create database test'" >/dev/null 2>&1 || true
fi
say "RabbitMQ and PostgreSQL are up"
