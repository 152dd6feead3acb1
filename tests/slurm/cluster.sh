#!/usr/bin/env bash
# A real single-node Slurm cluster for the tests: Debian's slurm-wlm + munge, one node with 2 CPUs and
# one fake GPU (gres gpu:1 on /dev/null), so `--gres=gpu:1` is really scheduled.
#   bash tests/slurm/cluster.sh up     install if needed, write the config, start the daemons, wait idle
#   bash tests/slurm/cluster.sh down   stop the daemons
# The config lives in $ZOOBENCH_SLURM_DIR (default /tmp/zoobench-slurm); clients need
# SLURM_CONF=$ZOOBENCH_SLURM_DIR/slurm.conf (`up` prints the export line last).
set -euo pipefail
DIR=${ZOOBENCH_SLURM_DIR:-/tmp/zoobench-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

die() { echo "slurm cluster: $*" >&2; exit 1; }

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed; run as root (apt-get) or install them"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; } \
    || die "apt-get install slurm-wlm munge failed"
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,run}
  cpus=$(nproc)
  cat >"$CONF" <<EOF
ClusterName=zoobench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MinJobAge=600
KillWait=10
ReturnToService=2
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
EOF
}

# sinfo waits ~25 s for a slurmctld that is not running: ask only once it is.
node_state() { pgrep -x slurmctld >/dev/null && timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -1; }

up() {
  install
  if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && { [ "$(node_state)" = idle ] || [ "$(node_state)" = mixed ] || [ "$(node_state)" = allocated ]; }; then
    echo "slurm cluster: already up ($CONF)"; echo "export SLURM_CONF=$CONF"; return
  fi
  write_config
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  # Daemons get no stdio of ours: a caller capturing our output would otherwise wait for them.
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
  pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld -f "$CONF" </dev/null >/dev/null 2>&1
  pgrep -x slurmd >/dev/null || /usr/sbin/slurmd -f "$CONF" -N localhost </dev/null >/dev/null 2>&1
  for _ in $(seq 1 60); do
    case "$(node_state)" in idle|mixed|allocated) echo "slurm cluster: node idle ($(sinfo -V))"; echo "export SLURM_CONF=$CONF"; return;; esac
    sleep 0.5
  done
  tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  die "the node did not become idle in 30 s (logs in $DIR/log)"
}

down() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
  echo "slurm cluster: stopped"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: cluster.sh up|down" ;;
esac
