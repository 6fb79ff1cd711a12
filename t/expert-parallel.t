#!/bin/sh
# Expert parallelism under mpirun (tiny-gpt-oss: 4 experts, top 2, the router aux loss on; one
# thread per rank): --dp 2 --ep 2 reproduces --dp 2 with the same global batch, step for step (loss
# and gradient norm within 1e-5 relative, printed; the validation loss too, 3 windows on 2 ranks) and
# in the parameters after 4 steps (the max difference printed), as does --dp 4 --ep 2 against
# --dp 4; both equal one rank accumulating the same micro-batches; a checkpoint saved under --ep 2
# resumes on one rank and one saved on one rank resumes under --ep 2 (the checkpoint holds the
# whole model); with --zero1 (optimizer state sharded over dp for the replicated parameters and
# over the ranks holding the same experts for the expert ones) --dp 2 --ep 2 equals --dp 2 --ep 2
# (1e-6, validation too) and --dp 4 --ep 2 equals --dp 4 (1e-4, the mesh tests' bound: at four ranks
# ZeRO-1's reduce-scatter sums in another order than the all-reduce; plain --dp 4 --zero1 against
# --dp 4 differs by 1.2e-5 on its own), and its
# checkpoint resumes on one rank; --dp 2 --ep 2 --pp 2 (four ranks: each stage's MoE layers exchange
# tokens within the stage's expert group) equals one rank with the same global batch under both
# schedules, with --zero1 too, and its checkpoint resumes on one rank; meshes gpt-train does not run
# with EP are refused with the reason.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
tools=${GPT_TBIN:-$root/t/bin}/../tools
cd "$root" || exit 1
export GPT_CONFIG_PATH="$root/share/configs"
export OMP_NUM_THREADS=1
N=14
echo "1..$N"
n=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi
}
diag() { sed 's/^/# /' "$@"; }
train="$bin/gpt-train"
if ! command -v mpirun >/dev/null 2>&1; then
    for i in $(seq $N); do echo "ok $i # SKIP mpirun not installed"; done
    exit 0
fi
if ! "$train" --help 2>&1 | grep -q "mpirun -np"; then
    for i in $(seq $N); do echo "ok $i # SKIP gpt-train built without MPI"; done
    exit 0
fi
# MPICH's transport modules leak at MPI_Finalize (see t/train.t): no leak checks under mpirun.
[ -n "$GPT_ASAN" ] && export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/expert-parallel-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
run() { timeout -k 10 300 mpirun "$@"; }

awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%d ", (i * 7 + int(i / 13)) % 509 + 100; print "" }' |
    "$bin/gpt-tokenize" pack --vocab-size 50257 -o "$tmp/syn.tok"
D="-c tiny-gpt-oss -d $tmp/syn.tok --seq-len 32 -n 4 --lr 3e-3 --warmup 2 -q"
maxdiff="$tools/ckpt-maxdiff"
close() { # A B what [TOL]: the max parameter difference, printed; fp32 reduction order only
    d=$("$maxdiff" "$1" "$2")
    echo "# $3: max |param diff| = $d"
    awk -v d="${d%% *}" -v t="${4:-1e-4}" 'BEGIN { exit !(d != "" && d <= t + 0) }'
}
same_steps() { # A B: every step's loss and gradient norm, and every validation loss (metrics.jsonl),
    # within 1e-5 relative
    awk '
        function val(s, k, i, r) {
            i = index(s, "\"" k "\":")
            if (!i) return ""
            r = substr(s, i + length(k) + 3)
            sub(/[,}].*/, "", r)
            return r
        }
        function rel(a, b, m) {
            m = (a < 0 ? -a : a) > (b < 0 ? -b : b) ? (a < 0 ? -a : a) : (b < 0 ? -b : b)
            return m > 0 ? (a - b < 0 ? b - a : a - b) / m : 0
        }
        FNR == NR {
            if ((x = val($0, "loss")) != "") { na++; la[na] = x; ga[na] = val($0, "grad_norm") }
            if ((x = val($0, "val_loss")) != "") va[++nva] = x
            next
        }
        (x = val($0, "val_loss")) != "" {
            printf "# validation %d: loss %s vs %s\n", ++nvb, va[nvb], x
            if (rel(va[nvb] + 0, x + 0) > worst) worst = rel(va[nvb] + 0, x + 0)
        }
        (x = val($0, "loss")) != "" {
            nb++
            g = val($0, "grad_norm")
            printf "# step %d: loss %s vs %s, grad norm %s vs %s\n", nb, la[nb], x, ga[nb], g
            if (rel(la[nb] + 0, x + 0) > worst) worst = rel(la[nb] + 0, x + 0)
            if (rel(ga[nb] + 0, g + 0) > worst) worst = rel(ga[nb] + 0, g + 0)
        }
        END {
            printf "# max relative difference of loss and grad norm over %d steps: %.3g\n", nb, worst
            exit !(na == nb && nb > 0 && nva == nvb && worst <= 1e-5)
        }' "$1/metrics.jsonl" "$2/metrics.jsonl"
}

# ---- two ranks: one expert group holding 2 experts each ----
# validation: 3 windows over 2 ranks, so one rank of the expert group runs a forward it drops
V="--val-data $tmp/syn.tok --eval-interval 2 --eval-steps 3"
run -np 2 "$train" $D $V -b 4 -o "$tmp/dp2" 2>>"$tmp/err" &&
    run -np 2 "$train" $D $V -b 4 --ep 2 -o "$tmp/ep2" 2>>"$tmp/err" &&
    same_steps "$tmp/dp2" "$tmp/ep2"
ok $? "--dp 2 --ep 2: every step's loss and gradient norm, and the validation loss, equal --dp 2's"
close "$tmp/dp2" "$tmp/ep2" "--dp 2 --ep 2 vs --dp 2, 4 steps"
ok $? "--dp 2 --ep 2 reproduces --dp 2's parameters"
"$train" $D -b 4 --grad-accum 2 -o "$tmp/one" 2>>"$tmp/err" &&
    close "$tmp/one" "$tmp/ep2" "--dp 2 --ep 2 vs one rank accumulating the same 2 micro-batches"
ok $? "--dp 2 --ep 2 reproduces one rank with the same global batch"

# ---- four ranks: two expert groups of 2 (expert gradients reduced over the groups) ----
# (the baseline reduces after backward, as EP does: overlapped, 4 ranks sum each bucket in another order)
run -np 4 "$train" $D -b 2 --no-overlap-grad-reduce -o "$tmp/dp4" 2>>"$tmp/err" &&
    run -np 4 "$train" $D -b 2 --ep 2 -o "$tmp/ep2x4" 2>>"$tmp/err" &&
    same_steps "$tmp/dp4" "$tmp/ep2x4" &&
    close "$tmp/dp4" "$tmp/ep2x4" "--dp 4 --ep 2 vs --dp 4, 4 steps"
ok $? "--dp 4 --ep 2 reproduces --dp 4 (steps and parameters)"

# ---- checkpoints hold the whole model ----
run -np 2 "$train" $D -b 4 --ep 2 --stop-at 2 -o "$tmp/mix" 2>>"$tmp/err" &&
    "$train" $D -b 4 --grad-accum 2 --resume -o "$tmp/mix" 2>>"$tmp/err" &&
    close "$tmp/one" "$tmp/mix" "--ep 2 to step 2, resumed on one rank to 4, vs one rank"
ok $? "a checkpoint saved under --ep 2 resumes on one rank"
"$train" $D -b 4 --grad-accum 2 --stop-at 2 -o "$tmp/mix2" 2>>"$tmp/err" &&
    run -np 2 "$train" $D -b 4 --ep 2 --resume -o "$tmp/mix2" 2>>"$tmp/err" &&
    close "$tmp/ep2" "$tmp/mix2" "one rank to step 2, resumed under --ep 2 to 4, vs --ep 2"
ok $? "a checkpoint saved on one rank resumes under --ep 2"

# ---- ZeRO-1: each part's optimizer state sharded over the ranks holding that part ----
run -np 2 "$train" $D $V -b 4 --ep 2 --zero1 -o "$tmp/ep2z" 2>>"$tmp/err" &&
    same_steps "$tmp/ep2" "$tmp/ep2z" &&
    close "$tmp/ep2" "$tmp/ep2z" "--dp 2 --ep 2 --zero1 vs --dp 2 --ep 2, 4 steps" 1e-6
ok $? "--dp 2 --ep 2 --zero1 reproduces --dp 2 --ep 2 (steps and parameters)"
run -np 4 "$train" $D -b 2 --ep 2 --zero1 -o "$tmp/ep2x4z" 2>>"$tmp/err" &&
    same_steps "$tmp/dp4" "$tmp/ep2x4z" &&
    close "$tmp/dp4" "$tmp/ep2x4z" "--dp 4 --ep 2 --zero1 vs --dp 4, 4 steps"
ok $? "--dp 4 --ep 2 --zero1 reproduces --dp 4 (steps and parameters)"
run -np 2 "$train" $D -b 4 --ep 2 --zero1 --stop-at 2 -o "$tmp/mixz" 2>>"$tmp/err" &&
    "$train" $D -b 4 --grad-accum 2 --resume -o "$tmp/mixz" 2>>"$tmp/err" &&
    close "$tmp/ep2z" "$tmp/mixz" "--ep 2 --zero1 to step 2, resumed on one rank to 4, vs --ep 2 --zero1" 1e-5
ok $? "a checkpoint saved under --ep 2 --zero1 resumes on one rank"

# ---- pipeline stages, each with its expert groups ----
# two micro-batches of 4 per dp rank, against one rank accumulating the same 4 (the router aux loss
# depends on the micro-batch, so the micro-batches match)
"$train" $D $V -b 4 --grad-accum 4 -o "$tmp/one4" 2>>"$tmp/err" &&
    run -np 4 "$train" $D $V -b 4 --grad-accum 2 --ep 2 --pp 2 -o "$tmp/ep2pp2" 2>>"$tmp/err" &&
    same_steps "$tmp/one4" "$tmp/ep2pp2" &&
    close "$tmp/one4" "$tmp/ep2pp2" "--dp 2 --ep 2 --pp 2 (GPipe) vs one rank, 4 steps"
ok $? "--dp 2 --ep 2 --pp 2 reproduces one rank with the same global batch (steps, validation, parameters)"
run -np 4 "$train" $D $V -b 4 --grad-accum 2 --ep 2 --pp 2 --pp-schedule 1f1b --zero1 -o "$tmp/ep2pp2z" \
    2>>"$tmp/err" &&
    same_steps "$tmp/one4" "$tmp/ep2pp2z" &&
    close "$tmp/one4" "$tmp/ep2pp2z" "--dp 2 --ep 2 --pp 2 --pp-schedule 1f1b --zero1 vs one rank, 4 steps"
ok $? "--dp 2 --ep 2 --pp 2 under 1F1B with --zero1 reproduces one rank"
run -np 4 "$train" $D -b 4 --grad-accum 2 --ep 2 --pp 2 --zero1 --stop-at 2 -o "$tmp/mixpp" 2>>"$tmp/err" &&
    "$train" $D -b 4 --grad-accum 4 --resume -o "$tmp/mixpp" 2>>"$tmp/err" &&
    close "$tmp/one4" "$tmp/mixpp" "--ep 2 --pp 2 --zero1 to step 2, resumed on one rank to 4, vs one rank"
ok $? "a checkpoint saved under --dp 2 --ep 2 --pp 2 --zero1 resumes on one rank"

# ---- what gpt-train does not run with EP ----
run -np 2 "$train" -c tiny-gpt2 -d "$tmp/syn.tok" --seq-len 32 -n 1 -q --ep 2 -o "$tmp/bad" >/dev/null 2>"$tmp/bad1"
[ $? -ne 0 ] && grep -q "needs a mixture-of-experts model" "$tmp/bad1"
ok $? "--ep on a dense model is refused"
run -np 4 "$train" $D -n 1 --ep 2 --tp 2 -o "$tmp/bad" >/dev/null 2>"$tmp/bad3"
[ $? -ne 0 ] && grep -q "does not combine expert parallelism with tensor parallelism" "$tmp/bad3"
ok $? "--ep with --tp is refused with the reason"
grep -v OpenBLAS "$tmp/err" | diag
