#!/usr/bin/env bash
# Bring up / tear down a throw-away single-node Slurm cluster on 127.0.0.1.
#
#   tests/slurm/cluster.sh start    install (if needed), configure, start, wait for idle
#   tests/slurm/cluster.sh stop     cancel jobs, stop our daemons (safe to repeat)
#   tests/slurm/cluster.sh status   sinfo / squeue
#   tests/slurm/cluster.sh env      print shell exports (state dir, node name)
#
# Exit codes of `start`: 0 up and idle; 3 cannot run here (not root, no apt,
# packages not installable: callers should SKIP); anything else: real failure
# (daemon logs are printed).
#
# Environment knobs (all optional):
#   VAEINF_SLURM_STATE   state dir (pid files, logs, spool)   [/tmp/vaeinf-slurm]
#   VAEINF_SLURM_TIMEOUT seconds to wait for the node to be idle [60]
#   VAEINF_SLURM_GPUS    number of fake GPUs in the gres       [2]
#   VAEINF_SLURM_PROCTRACK  ProctrackType                      [proctrack/pgid]
#   VAEINF_SLURM_KILLWAIT   seconds between SIGTERM and SIGKILL on cancel [3]
#
# Daemons are started in the foreground mode (-D / -F) in the background of a
# new session, so $! is the daemon's own PID; it is recorded in $STATE/*.pid.
# Every daemon carries VAEINF_SLURM_TAG=$STATE in its environment, which is
# inherited by slurmstepd; `stop` only ever signals processes carrying that tag.
set -uo pipefail

STATE="${VAEINF_SLURM_STATE:-/tmp/vaeinf-slurm}"
TIMEOUT="${VAEINF_SLURM_TIMEOUT:-60}"
NGPUS="${VAEINF_SLURM_GPUS:-2}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
GRES_CONF="$CONF_DIR/gres.conf"
MARKER="# managed-by: vaeinf tests/slurm/cluster.sh"
PKGS=(slurmctld slurmd slurm-client munge)
DAEMONS_STOP_ORDER=(slurmd slurmctld munged)
TAG="VAEINF_SLURM_TAG=$STATE"

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
log() { printf '[cluster.sh %5ss] %s\n' "$(elapsed)" "$*" >&2; }
skip() {
    echo "SKIP: $*" >&2
    exit 3
}
die() {
    echo "ERROR: $*" >&2
    exit 1
}

node_name() { hostname -s 2>/dev/null || hostname; }

# ---------------------------------------------------------------- processes
# is_ours PID NAME: alive, comm == NAME, and carries our tag in its environ.
is_ours() {
    local pid=$1 name=$2 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$comm" == "$name" ]] || return 1
    { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "$TAG"
}

# alive PID: exists and is not a zombie (used while a daemon may still be
# between fork and exec, when its comm is not yet the daemon's name).
alive() {
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    local st
    st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}

# kill_pid PID NAME: TERM, wait up to 5 s, then KILL.
kill_pid() {
    local pid=$1 name=$2 i
    is_ours "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        is_ours "$pid" "$name" || return 0
        sleep 0.1
    done
    log "$name ($pid) ignored TERM, sending KILL"
    kill -KILL "$pid" 2>/dev/null
    for ((i = 0; i < 20; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
}

# The daemons are orphans (parent: init). Some inits (e.g. a VM's minimal
# PID 1) reap only every ~2 s, so killed daemons linger as zombies and show
# up in `pgrep`. Wait (bounded) until they are gone.
wait_reaped() {
    local pid i left
    for ((i = 0; i < 50; i++)); do
        left=0
        for pid in "$@"; do [[ -e /proc/$pid ]] && left=1; done
        ((left)) || return 0
        sleep 0.1
    done
}

# slurmstepd processes are detached from slurmd (reparented to init) and
# overwrite their environ with the process title, so the tag is not visible.
# Ours are those that hold our SlurmdLogFile open.
our_stepds() {
    local p fd
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
        for fd in /proc/"$p"/fd/*; do
            if [[ "$(readlink "$fd" 2>/dev/null)" == "$STATE/slurmd.log"* ]]; then
                echo "$p"
                break
            fi
        done
    done
}

# descendants PID... : all (transitive) children of the given processes
descendants() {
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            n = split(roots, r, " "); for (i = 1; i <= n; i++) mark[r[i]] = 1
            do { changed = 0
                 for (k in pids) { p = pids[k]
                     if (!(p in mark) && (parent[p] in mark)) { mark[p] = 2; changed = 1 } }
            } while (changed)
            for (p in mark) if (mark[p] == 2) print p
        }'
}

start_daemon() { # NAME CMD...   -> records pid in $STATE/NAME.pid
    local name=$1
    shift
    # setsid: own session, so the caller's Ctrl-C / process group kills do not
    # reach it; all fds redirected so a capturing caller (pytest) is not held.
    env "$TAG" setsid "$@" </dev/null >>"$STATE/$name.log" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$STATE/$name.pid"
    log "started $name pid=$pid"
}

# ---------------------------------------------------------------- install
have_binaries() {
    local b
    for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmstepd /usr/bin/sinfo \
        /usr/bin/sbatch /usr/bin/squeue /usr/bin/scontrol /usr/sbin/munged /usr/bin/munge; do
        [[ -x $b ]] || return 1
    done
}

ensure_packages() {
    if have_binaries; then
        log "packages already installed"
        return 0
    fi
    command -v apt-get >/dev/null || skip "slurm not installed and no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Do not let maintainer scripts start munge/slurm services: we run our own.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
        -o DPkg::Lock::Timeout=120 --no-install-recommends)
    local rc=1
    log "installing ${PKGS[*]} (apt-get)"
    # Try with the existing lists first; only refresh them when that fails.
    if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get install "${apt_opts[@]}" "${PKGS[@]}" >"$STATE/apt.log" 2>&1 && rc=0
    fi
    if ((rc != 0)); then
        log "apt-get update"
        apt-get update -q >>"$STATE/apt.log" 2>&1 # may warn about unreachable repos
        apt-get install "${apt_opts[@]}" "${PKGS[@]}" >>"$STATE/apt.log" 2>&1 && rc=0
    fi
    if ((made_policy)); then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    if ((rc != 0)) || ! have_binaries; then
        tail -n 20 "$STATE/apt.log" >&2
        skip "could not install ${PKGS[*]} with apt-get (see $STATE/apt.log)"
    fi
    log "packages installed"
}

# ---------------------------------------------------------------- config
write_config() {
    local node=$1 cpus mem_avail real_mem def_mem i files=()
    cpus=$(nproc)
    # MB; leave some headroom for the daemons/test runner
    mem_avail=$(awk '/^MemAvailable:/{print int($2/1024)}' /proc/meminfo)
    real_mem=$((mem_avail * 85 / 100))
    ((real_mem < 512)) && real_mem=512
    # Without DefMemPerCPU a job without --mem gets the whole node's memory
    # and jobs run one at a time.
    def_mem=$((real_mem / cpus / 2))
    ((def_mem > 1024)) && def_mem=1024

    # Fake GPU device files. Slurm only stat()s them; CUDA_VISIBLE_DEVICES is
    # derived from the gres index, not from the file.
    files=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)
    if ((NGPUS > ${#files[@]})); then die "at most ${#files[@]} fake GPUs supported"; fi

    mkdir -p "$CONF_DIR"
    local f
    for f in "$CONF" "$GRES_CONF"; do
        if [[ -s $f ]] && ! grep -qF "$MARKER" "$f" && [[ ! -e $f.vaeinf-orig ]]; then
            cp -p "$f" "$f.vaeinf-orig"
            log "backed up foreign $f to $f.vaeinf-orig"
        fi
    done

    local gres_line="" gres_types=""
    if ((NGPUS > 0)); then
        gres_line="Gres=gpu:fake:$NGPUS"
        gres_types="GresTypes=gpu"
    fi

    cat >"$CONF.tmp" <<EOF
$MARKER
# Single-node test cluster; regenerated on every 'start'.
ClusterName=vaeinf
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (portable to containers). pgid, not linuxproc: linuxproc loses
# track of processes re-parented to init (e.g. a background child of a batch
# shell that already exited) and leaks them; pgid kills the job's process group.
ProctrackType=${VAEINF_SLURM_PROCTRACK:-proctrack/pgid}
TaskPlugin=task/none
MpiDefault=none
# no slurmdbd: squeue (with a large MinJobAge) is the job-status source
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# react within ~1-2 s instead of the default 30/60 s scheduler passes
SchedulerParameters=bf_interval=1,sched_interval=2
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
$gres_types
# keep finished jobs visible in squeue/scontrol for an hour
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=${VAEINF_SLURM_KILLWAIT:-3}
Waittime=0
MessageTimeout=10
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$real_mem $gres_line State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv -f "$CONF.tmp" "$CONF"

    {
        echo "$MARKER"
        echo "AutoDetect=off"
        # File= is what makes Slurm export CUDA_VISIBLE_DEVICES (gres index)
        for ((i = 0; i < NGPUS; i++)); do
            echo "NodeName=$node Name=gpu Type=fake File=${files[$i]}"
        done
    } >"$GRES_CONF.tmp"
    mv -f "$GRES_CONF.tmp" "$GRES_CONF"
    chmod 644 "$CONF" "$GRES_CONF"
    log "wrote $CONF (CPUs=$cpus RealMemory=$real_mem DefMemPerCPU=$def_mem gpus=$NGPUS) and $GRES_CONF"
}

prepare_munge() {
    id munge >/dev/null 2>&1 || die "user munge missing (munge package broken?)"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /etc/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null 2>&1 ||
                dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        log "created /etc/munge/munge.key"
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    # stale socket/lock from a killed munged makes the new one refuse to start
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# ---------------------------------------------------------------- wait helpers
node_state() { sinfo -h -n "$1" -o %T 2>/dev/null | head -n1; }

dump_logs() {
    local f
    for f in munged slurmctld slurmd; do
        echo "===== $STATE/$f.log (tail) =====" >&2
        tail -n 40 "$STATE/$f.log" 2>/dev/null >&2
    done
}

# ---------------------------------------------------------------- commands
cmd_stop() {
    mkdir -p "$STATE"
    local pidf pid name i any=0 killed=()
    # Cancel jobs first while the daemons are still up, so that slurmstepd and
    # the job processes are cleaned up by Slurm itself.
    if [[ -f $STATE/slurmctld.pid ]] && is_ours "$(cat "$STATE/slurmctld.pid")" slurmctld; then
        local ids
        ids=$(timeout 10 squeue -h -o %A -t PD,R,S,CG,CF,RQ,RS,RH,SI,SO,ST 2>/dev/null | tr '\n' ' ')
        if [[ -n ${ids// /} ]]; then
            log "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            # KILL right away: this is a teardown, no grace period (KillWait)
            timeout 10 scancel --signal=KILL $ids 2>/dev/null
            local i
            for ((i = 0; i < 50; i++)); do # <= 10 s, the rest is killed below
                [[ -z "$(timeout 5 squeue -h -o %A -t PD,R,S,CG,CF 2>/dev/null)" ]] && break
                sleep 0.2
            done
        fi
    fi
    for name in "${DAEMONS_STOP_ORDER[@]}"; do
        pidf="$STATE/$name.pid"
        [[ -f $pidf ]] || continue
        pid=$(cat "$pidf" 2>/dev/null)
        if is_ours "$pid" "$name"; then
            log "stopping $name ($pid)"
            kill_pid "$pid" "$name"
            killed+=("$pid")
            any=1
        fi
        rm -f "$pidf"
    done
    # Leftover job-step daemons of our slurmd (slurmctld/slurmd died or could
    # not kill a job) and the job processes below them.
    local stepds victims
    stepds=$(our_stepds)
    if [[ -n $stepds ]]; then
        # shellcheck disable=SC2086
        victims=$(descendants $stepds)
        log "killing leftover slurmstepd $(echo $stepds) and job processes $(echo $victims)"
        # shellcheck disable=SC2086
        kill -TERM $stepds $victims 2>/dev/null
        local left
        for ((i = 0; i < 30; i++)); do
            left=0
            for pid in $stepds $victims; do alive "$pid" && left=1; done
            ((left)) || break
            sleep 0.1
        done
        for pid in $stepds $victims; do
            alive "$pid" && kill -KILL "$pid" 2>/dev/null
            killed+=("$pid")
        done
        any=1
    fi
    ((${#killed[@]})) && wait_reaped "${killed[@]}"
    rm -f "$STATE"/*.daemon.pid
    ((any)) && log "stopped" || log "nothing was running"
    return 0
}

cmd_start() {
    [[ $(id -u) -eq 0 ]] || skip "must be root to run a local slurm cluster"
    [[ $(uname -s) == Linux ]] || skip "not Linux"
    mkdir -p "$STATE" || skip "cannot create $STATE"
    chmod 755 "$STATE"

    ensure_packages
    # Clean up whatever a previous run left behind (stale pids, old state).
    cmd_stop >/dev/null 2>&1

    local node
    node=$(node_name)
    [[ -n $node ]] || die "empty hostname"

    # refuse to fight with daemons we did not start (ports 6817/6818)
    local p foreign=""
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        case "$(cat /proc/"$p"/comm 2>/dev/null)" in
        slurmctld | slurmd)
            alive "$p" || continue # zombie waiting to be reaped by init
            is_ours "$p" "$(cat /proc/"$p"/comm)" || foreign+=" $p($(cat /proc/"$p"/comm))"
            ;;
        esac
    done
    [[ -z $foreign ]] || die "slurm daemons not started by this script are running:$foreign; stop them first"

    rm -rf "$STATE/ctld" "$STATE/slurmd"
    install -d -m 0755 "$STATE/ctld" "$STATE/slurmd"
    rm -f "$STATE"/munged.log "$STATE"/slurmctld.log "$STATE"/slurmd.log
    write_config "$node"

    # ---- munge
    local i reuse_munge=0
    if pgrep -x munged >/dev/null 2>&1 && munge_ok; then
        # a system munged (not ours) is already serving /run/munge; use it
        log "reusing already running munged"
        reuse_munge=1
    else
        prepare_munge
        # -F: foreground so that $! is munged itself; run as the munge user
        start_daemon munged setpriv --reuid=munge --regid=munge --init-groups \
            /usr/sbin/munged -F
        for ((i = 0; i < 100; i++)); do
            munge_ok && break
            alive "$(cat "$STATE/munged.pid")" || break
            sleep 0.1
        done
        munge_ok || {
            dump_logs
            die "munged did not come up"
        }
    fi
    ((reuse_munge)) || log "munge ok"

    # ---- slurmctld (clean state each start: -c)
    start_daemon slurmctld /usr/sbin/slurmctld -D -c -i -f "$CONF"
    for ((i = 0; i < 150; i++)); do
        scontrol ping 2>/dev/null | grep -q 'is UP' && break
        alive "$(cat "$STATE/slurmctld.pid")" || break
        sleep 0.2
    done
    scontrol ping 2>/dev/null | grep -q 'is UP' || {
        dump_logs
        die "slurmctld did not come up"
    }
    log "slurmctld up"

    # ---- slurmd
    start_daemon slurmd /usr/sbin/slurmd -D -N "$node" -f "$CONF"

    local st="" deadline=$(($(date +%s) + TIMEOUT)) resumed=0
    while (($(date +%s) < deadline)); do
        st=$(node_state "$node")
        case "$st" in
        idle | mixed | allocated) break ;;
        inval*) break ;; # config/hardware mismatch: resume cannot fix it
        down* | drain* | fail*)
            # e.g. DOWN after an unclean previous run; try a few times
            if ((resumed < 5)); then
                scontrol update nodename="$node" state=resume >/dev/null 2>&1
                resumed=$((resumed + 1))
            fi
            ;;
        esac
        alive "$(cat "$STATE/slurmd.pid")" || {
            dump_logs
            die "slurmd exited"
        }
        sleep 0.3
    done
    case "$st" in
    idle | mixed | allocated) ;;
    *)
        sinfo -R >&2
        scontrol show node "$node" >&2
        dump_logs
        die "node $node not usable (state: ${st:-unknown}; waited up to ${TIMEOUT}s)"
        ;;
    esac
    log "cluster up: node $node is $st"
    return 0
}

# status: exit 0 iff slurmctld and slurmd of this script are running.
cmd_status() {
    echo "# state dir: $STATE"
    local name pid up=0
    for name in munged slurmctld slurmd; do
        pid=$(cat "$STATE/$name.pid" 2>/dev/null)
        if is_ours "$pid" "$name"; then
            echo "# $name: running (pid $pid)"
            [[ $name == munged ]] || up=$((up + 1))
        else
            echo "# $name: not running"
        fi
    done
    ((up == 2)) || return 1
    timeout 10 sinfo 2>&1
    timeout 10 squeue --states=all 2>&1
    return 0
}

cmd_env() {
    echo "export VAEINF_SLURM_STATE=$STATE"
    echo "export VAEINF_SLURM_NODE=$(node_name)"
}

# Serialise concurrent invocations (e.g. parallel pytest workers). Best
# effort: without write access to the lock file we run unlocked.
if { exec 9>>"$STATE.lock"; } 2>/dev/null; then
    flock -w 300 9 || true
fi

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
    ;;
esac
