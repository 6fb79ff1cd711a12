#!/bin/sh
# gpt-train --log-parallel under mpirun (tiny GPT-2, vocabulary 1024, untied, 2 layers of width 64):
# each pipeline stage runs its micro-batches in the order pp-sched prints for the schedule
# (lib/pp_schedule.h: GPipe and 1F1B as defined), and the counted bytes per step equal the
# analytic counts: pipeline sends and receives m x B x T x C floats, data parallelism all-reduces
# every gradient (the GPT-2 parameter count, 4 bytes each), ZeRO-1 reduce-scatters and all-gathers
# the same, tensor parallelism all-reduces B x T x C floats 4 times per layer and twice more (the
# vocab-parallel embedding's output, the head's input gradient).
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
tools=${GPT_TBIN:-$root/t/bin}/../tools
cd "$root" || exit 1
export GPT_CONFIG_PATH="$root/share/configs"
export OMP_NUM_THREADS=1
N=10
echo "1..$N"
n=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi
}
skipall() { for i in $(seq $N); do echo "ok $i # SKIP $1"; done; exit 0; }
train="$bin/gpt-train"
command -v mpirun >/dev/null 2>&1 || skipall "mpirun not installed"
"$train" --help 2>&1 | grep -q "mpirun -np" || skipall "gpt-train built without MPI"
[ -n "$GPT_ASAN" ] && export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipeline-stats-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
run() { timeout -k 10 300 mpirun "$@"; }
awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%d ", (i * 7 + int(i / 13)) % 509 + 100; print "" }' |
    "$bin/gpt-tokenize" pack --vocab-size 1024 -o "$tmp/syn.tok"
V=1024 C=64 L=2 TMAX=128 B=4 T=32
M="-c tiny-gpt2 --set model.vocab_size=$V --set model.tie_embeddings=false -d $tmp/syn.tok --seq-len $T -b $B -n 2 -q"
# field F (a [calls,bytes] pair or a "string") of communicator COMM's object, from the step-2 line
pair() { sed -n 2p "$1" | grep -o "\"$2\":{[^}]*}" | grep -o "\"$3\":\[[0-9]*,[0-9]*\]" | sed 's/.*\[//; s/\]//'; }
order() { sed -n 2p "$1" | grep -o '"order":"[^"]*"' | sed 's/"order":"//; s/"$//'; }
act=$((B * T * C * 4))

for s in gpipe:3 1f1b:4; do
    sch=${s%:*} m=${s#*:}
    run -np 2 "$train" $M --pp 2 --pp-schedule $sch --grad-accum $m -o "$tmp/o-$sch" --log-parallel "$tmp/$sch" \
        2>>"$tmp/err"
    st=0
    for r in 0 1; do
        got=$(order "$tmp/$sch.rank$r.jsonl") want=$("$tools/pp-sched" order $sch 2 $r $m)
        echo "# $sch m=$m stage $r: ran '$got', schedule '$want'"
        [ -n "$got" ] && [ "$got" = "$want" ] || st=1
    done
    ok $st "--pp 2 $sch: every stage ran the schedule's op order"
    st=0
    for r in 0 1; do
        [ "$(pair "$tmp/$sch.rank$r.jsonl" pp send)" = "$m,$((m * act))" ] || st=1
        [ "$(pair "$tmp/$sch.rank$r.jsonl" pp recv)" = "$m,$((m * act))" ] || st=1
    done
    echo "# $sch: stage 0 sent $(pair "$tmp/$sch.rank0.jsonl" pp send) (calls,bytes), want $m,$((m * act))"
    ok $st "--pp 2 $sch: $m activations and $m gradients of B x T x C floats each way per step"
done

nparams=$((2 * V * C + TMAX * C + L * (12 * C * C + 13 * C) + 2 * C))
run -np 2 "$train" $M --dp 2 --no-overlap-grad-reduce -o "$tmp/o-dp" --log-parallel "$tmp/dp" 2>>"$tmp/err"
got=$(pair "$tmp/dp.rank1.jsonl" dp allreduce)
echo "# dp 2: all-reduce $got (calls,bytes), want 1,$((4 * nparams)) ($nparams parameters)"
[ "$got" = "1,$((4 * nparams))" ]
ok $? "--dp 2 --no-overlap-grad-reduce: one all-reduce of every gradient per step"
# overlapped with backward (the default): non-blocking all-reduces that cover every gradient once
run -np 2 "$train" $M --dp 2 --grad-bucket-mb 0 -o "$tmp/o-dpo" --log-parallel "$tmp/dpo" 2>>"$tmp/err"
got=$(pair "$tmp/dpo.rank1.jsonl" dp iallreduce)
echo "# dp 2 overlapped, a bucket per layer: non-blocking all-reduce $got (calls,bytes), want >= $((L + 1)),$((4 * nparams))"
[ "${got#*,}" = "$((4 * nparams))" ] && [ "${got%,*}" -ge $((L + 1)) ] && [ -z "$(pair "$tmp/dpo.rank1.jsonl" dp allreduce)" ]
ok $? "--dp 2 overlapped: non-blocking all-reduces of every gradient once, at least one per layer, no blocking one"
run -np 2 "$train" $M --dp 2 --zero1 --no-overlap-grad-reduce -o "$tmp/o-z1" --log-parallel "$tmp/z1" 2>>"$tmp/err"
[ "$(pair "$tmp/z1.rank0.jsonl" dp reduce_scatter)" = "1,$((4 * nparams))" ] &&
    [ "$(pair "$tmp/z1.rank0.jsonl" dp allgather)" = "1,$((4 * nparams))" ] &&
    [ -z "$(pair "$tmp/z1.rank0.jsonl" dp allreduce)" ]
ok $? "--dp 2 --zero1: a reduce-scatter and an all-gather of every parameter, no float all-reduce"
run -np 2 "$train" $M --dp 2 --zero1 -o "$tmp/o-z1o" --log-parallel "$tmp/z1o" 2>>"$tmp/err"
got=$(pair "$tmp/z1o.rank0.jsonl" dp ireduce)
echo "# dp 2 --zero1 overlapped: non-blocking reduces to the shard owners $got (calls,bytes), want *,$((4 * nparams))"
[ "${got#*,}" = "$((4 * nparams))" ] && [ "$(pair "$tmp/z1o.rank0.jsonl" dp allgather)" = "1,$((4 * nparams))" ] &&
    [ -z "$(pair "$tmp/z1o.rank0.jsonl" dp reduce_scatter)" ]
ok $? "--dp 2 --zero1 overlapped: every gradient reduced once to its shard's owner, then one all-gather"
run -np 2 "$train" $M --tp 2 -o "$tmp/o-tp" --log-parallel "$tmp/tp" 2>>"$tmp/err"
got=$(pair "$tmp/tp.rank0.jsonl" tp allreduce)
echo "# tp 2: all-reduce $got (calls,bytes), want $((4 * L + 2)),$(((4 * L + 2) * act))"
[ "$got" = "$((4 * L + 2)),$(((4 * L + 2) * act))" ]
ok $? "--tp 2: 4 all-reduces of B x T x C per layer and 2 more per micro-batch"
grep -q '"maxrss_kib":[1-9]' "$tmp/tp.rank1.jsonl"
ok $? "every rank logs its peak RSS"
[ -s "$tmp/err" ] && grep -v OpenBLAS "$tmp/err" | sed 's/^/# /' | head -20
exit 0
