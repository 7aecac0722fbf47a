#!/usr/bin/env bash
# End-to-end smoke test of the local test cluster (tests/slurm/cluster.sh).
#
#   bash tests/slurm/smoke.sh        exit 0 = all checks passed,
#                                    exit 3 = cluster cannot run here (skip),
#                                    other  = failure
#
# Starts the cluster, always stops it again on exit (set SMOKE_KEEP=1 to keep
# it running for inspection).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$HERE/cluster.sh"
WAIT_S=${SMOKE_WAIT_S:-60}
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
say() { printf '[smoke %5ss] %s\n' "$(elapsed)" "$*"; }
FAILS=0
PASSES=0
ok() {
    PASSES=$((PASSES + 1))
    say "ok: $*"
}
fail() {
    FAILS=$((FAILS + 1))
    say "FAIL: $*"
}

WORK=$(mktemp -d /tmp/vaeinf-slurm-smoke.XXXXXX)
cleanup() {
    local rc=$?
    if [[ ${SMOKE_KEEP:-0} != 1 ]]; then
        bash "$CLUSTER" stop || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Do not leak the caller's GPU selection into the jobs (sbatch --export=ALL).
unset CUDA_VISIBLE_DEVICES SLURM_JOB_ID SLURM_CONF

say "starting cluster"
ts=$(date +%s.%N)
bash "$CLUSTER" start
rc=$?
if ((rc == 3)); then
    say "SKIP: cluster cannot run here"
    exit 3
elif ((rc != 0)); then
    say "cluster start failed (rc=$rc)"
    exit 1
fi
say "cluster started in $(awk -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
cd "$WORK" || exit 1

job_state() { squeue -h --states=all -j "$1" -o %T 2>/dev/null | head -n1; }

# wait_done ID [TIMEOUT] -> prints final state
wait_done() {
    local id=$1 t=${2:-$WAIT_S} st="" end
    end=$(($(date +%s) + t))
    while (($(date +%s) < end)); do
        st=$(job_state "$id")
        case "$st" in
        COMPLETED | FAILED | CANCELLED | TIMEOUT | OUT_OF_MEMORY | NODE_FAIL | BOOT_FAIL | DEADLINE | PREEMPTED)
            echo "$st"
            return 0
            ;;
        esac
        sleep 0.3
    done
    echo "${st:-UNKNOWN}(timeout)"
    return 1
}

# wait_file PATH [TIMEOUT]
wait_file() {
    local f=$1 t=${2:-$WAIT_S} end
    end=$(($(date +%s) + t))
    while (($(date +%s) < end)); do
        [[ -s $f ]] && return 0
        sleep 0.2
    done
    return 1
}

submit() { sbatch --parsable "$@" | cut -d';' -f1; }

# ------------------------------------------------------------------ 1. gpu + plain
ts=$(date +%s.%N)
gpu_id=$(submit -o gpu.out --gres=gpu:1 --wrap 'echo $SLURM_JOB_ID $CUDA_VISIBLE_DEVICES')
plain_id=$(submit -o plain.out --wrap 'echo $SLURM_JOB_ID ${CUDA_VISIBLE_DEVICES-unset}')
gpus2_id=$(submit -o gpus2.out --gpus=2 --wrap 'echo $SLURM_JOB_ID $CUDA_VISIBLE_DEVICES')
st_gpu=$(wait_done "$gpu_id")
st_plain=$(wait_done "$plain_id")
st_gpus2=$(wait_done "$gpus2_id")
say "3 short jobs done in $(awk -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
[[ $st_gpu == COMPLETED ]] && ok "gpu job $gpu_id COMPLETED" || fail "gpu job $gpu_id state $st_gpu"
[[ $st_plain == COMPLETED ]] && ok "plain job $plain_id COMPLETED" || fail "plain job $plain_id state $st_plain"
[[ $st_gpus2 == COMPLETED ]] && ok "--gpus=2 job $gpus2_id COMPLETED" || fail "--gpus=2 job $gpus2_id state $st_gpus2"
wait_file gpu.out 5
wait_file plain.out 5
wait_file gpus2.out 5
say "gpu.out:   $(cat gpu.out 2>/dev/null)"
say "plain.out: $(cat plain.out 2>/dev/null)"
say "gpus2.out: $(cat gpus2.out 2>/dev/null)"
read -r a b <gpu.out 2>/dev/null
[[ ${a:-} == "$gpu_id" && ${b:-} =~ ^[0-9]+$ ]] &&
    ok "gpu job sees CUDA_VISIBLE_DEVICES=$b" || fail "gpu job output '$(cat gpu.out 2>/dev/null)'"
read -r a b <plain.out 2>/dev/null
[[ ${a:-} == "$plain_id" && ${b:-} == unset ]] &&
    ok "plain job has no CUDA_VISIBLE_DEVICES" || fail "plain job output '$(cat plain.out 2>/dev/null)'"
read -r a b <gpus2.out 2>/dev/null
[[ ${a:-} == "$gpus2_id" && ${b:-} =~ ^[0-9]+,[0-9]+$ ]] &&
    ok "--gpus=2 job sees CUDA_VISIBLE_DEVICES=$b" || fail "--gpus=2 job output '$(cat gpus2.out 2>/dev/null)'"

# ------------------------------------------------------------------ 2. concurrency
# Two 1-CPU jobs without --mem (DefMemPerCPU applies). Each one announces
# itself and waits (bounded) for the other one: both finish COMPLETED only if
# they were running at the same time.
barrier='touch "$ME"; for i in $(seq 150); do [ -e "$OTHER" ] && exit 0; sleep 0.2; done; exit 1'
c1=$(submit -c1 -o c1.out --export="ALL,ME=$WORK/c1.here,OTHER=$WORK/c2.here" --wrap "$barrier")
c2=$(submit -c1 -o c2.out --export="ALL,ME=$WORK/c2.here,OTHER=$WORK/c1.here" --wrap "$barrier")
s1=$(wait_done "$c1")
s2=$(wait_done "$c2")
[[ $s1 == COMPLETED && $s2 == COMPLETED ]] &&
    ok "two 1-CPU jobs ran concurrently ($c1, $c2)" || fail "concurrency: $c1=$s1 $c2=$s2"

# ------------------------------------------------------------------ 3. finished jobs stay visible
all=$(squeue -h --states=all -o '%i %T' | sort -n)
say "squeue --states=all:"
sed 's/^/    /' <<<"$all"
for id in "$gpu_id" "$plain_id" "$gpus2_id" "$c1" "$c2"; do
    grep -q "^$id COMPLETED$" <<<"$all" || fail "job $id not listed as COMPLETED by squeue --states=all"
done
scontrol show job "$gpu_id" | grep -q 'JobState=COMPLETED' &&
    ok "finished jobs listed by squeue --states=all and scontrol show job" ||
    fail "scontrol show job $gpu_id lacks JobState=COMPLETED"

# ------------------------------------------------------------------ 4. scancel --signal=TERM
# The batch script traps TERM in the shell and in a child process; each writes
# a marker file when it receives the signal.
cat >sigjob.sh <<'EOF'
#!/bin/bash
D=$1
( trap 'echo child >"$D/child.term"; exit 0' TERM
  while :; do sleep 0.2; done ) &
trap 'echo shell >"$D/shell.term"; sleep 1; exit 0' TERM
echo ready >"$D/ready"
# wait is interruptible by trapped signals; a foreground sleep would not be
for i in $(seq 60); do wait; done
EOF
chmod +x sigjob.sh

# sig_test LABEL [scancel flags...] -> prints "shell=<y/n> child=<y/n> state=<...>"
sig_test() {
    local label=$1 d id st
    shift
    d="$WORK/sig_$label"
    mkdir -p "$d"
    id=$(submit -o "$d/out" "$WORK/sigjob.sh" "$d")
    if ! wait_file "$d/ready" "$WAIT_S"; then
        echo "shell=? child=? state=$(job_state "$id")-never-ready"
        scancel "$id" 2>/dev/null
        return
    fi
    sleep 0.5
    scancel --signal=TERM "$@" "$id"
    # give the signal time to arrive and the job time to react
    local end=$(($(date +%s) + 5))
    while (($(date +%s) < end)); do
        [[ -e $d/shell.term && -e $d/child.term ]] && break
        sleep 0.2
    done
    sleep 1
    # record now: a later plain scancel also sends TERM (then KILL after KillWait)
    local got
    got="shell=$([[ -e $d/shell.term ]] && echo y || echo n) child=$([[ -e $d/child.term ]] && echo y || echo n)"
    st=$(job_state "$id")
    case "$st" in RUNNING | PENDING | COMPLETING) scancel "$id" 2>/dev/null ;; esac
    st=$(wait_done "$id" 20)
    # proctrack must not leave the job's processes behind (sbatch copies the
    # script to <spool>/jobNNNNN/slurm_script; the child subshell keeps that argv)
    local leak
    leak=$(pgrep -f "slurm_script $d\$" | tr '\n' ' ')
    echo "$got state=$st leaked=[${leak% }]"
}

r_none=$(sig_test none)
r_batch=$(sig_test batch --batch)
r_full=$(sig_test full --full)
say "scancel --signal=TERM           : $r_none"
say "scancel --signal=TERM --batch   : $r_batch"
say "scancel --signal=TERM --full    : $r_full"
[[ $r_full == "shell=y child=y"* ]] &&
    ok "scancel --signal=TERM --full reaches the batch shell and its children" ||
    fail "scancel --signal=TERM --full: $r_full"
[[ $r_batch == "shell=y"* ]] &&
    ok "scancel --signal=TERM --batch reaches the batch shell" ||
    fail "scancel --signal=TERM --batch: $r_batch"
[[ $r_none == "shell=n child=n"* ]] &&
    ok "plain scancel --signal=TERM does not signal the batch step (needs --batch/--full)" ||
    fail "plain scancel --signal=TERM unexpectedly: $r_none"
for r in "$r_none" "$r_batch" "$r_full"; do
    [[ $r == *"leaked=[]" ]] || fail "job processes left behind after the job ended: $r"
done

# ------------------------------------------------------------------ summary
say "$PASSES passed, $FAILS failed"
((FAILS == 0))
