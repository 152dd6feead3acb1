#!/usr/bin/env bash
# Make sure a Docker engine answers. On a root Debian/Ubuntu host with none, install docker.io
# and start dockerd in the background; elsewhere use the user's Docker as it is.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v dockerd >/dev/null; then
    echo "ensure-docker: installing docker.io (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq docker.io >/dev/null
  fi
  if ! pgrep -x dockerd >/dev/null; then
    echo "ensure-docker: starting dockerd (log: /var/log/zoobench-dockerd.log)" >&2
    nohup dockerd >/var/log/zoobench-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
  done
  echo "ensure-docker: dockerd did not answer within 60 s; see /var/log/zoobench-dockerd.log" >&2
  exit 1
fi
echo "ensure-docker: no Docker engine answers; install Docker and start it (or set DOCKER_HOST)" >&2
exit 1
