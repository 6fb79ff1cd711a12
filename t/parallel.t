#!/bin/sh
# The mesh and tensor parallelism under mpirun (tiny models, one thread per rank): --print-mesh gives
# every rank its coordinates in the documented order (tp fastest, then dp, then pp); a TP=2 model
# equals the single-rank model on the reference weights (loss, logits, every gradient, KV-cache
# inference; tp-check prints the max differences); gpt-train --tp 2 reproduces --tp 1's parameters
# (GPT-2 and GPT-OSS presets), dp2 x tp2 with ZeRO-1 reproduces one rank with the same global batch
# (and its gradient reduction overlapped with backward, the default, equals it done after backward),
# and a TP=2 checkpoint resumes under TP=1. Pipeline parallelism: --pp 2 under both schedules
# (GPipe, 1F1B) reproduces one rank with the same micro-batches (GPT-2 with its tied embedding
# across the two stages, GPT-OSS with the router aux loss across them), as do dp 2 x pp 2 and
# tp 2 x pp 2 on 4 ranks, and a PP=2 checkpoint resumes on one rank. Inference: greedy
# `gpt-generate --tp 2` prints what one rank prints.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
tools=${GPT_TBIN:-$root/t/bin}/../tools
cd "$root" || exit 1
export GPT_CONFIG_PATH="$root/share/configs"
export OMP_NUM_THREADS=1
echo "1..19"
n=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
diag() { sed 's/^/# /' "$@"; }
train="$bin/gpt-train"
if ! command -v mpirun >/dev/null 2>&1; then
    for i in $(seq 18); do skip "mpirun not installed"; done
    exit 0
fi
if ! "$train" --help 2>&1 | grep -q "mpirun -np"; then
    for i in $(seq 18); do skip "gpt-train built without MPI"; done
    exit 0
fi
# MPICH's transport modules leak at MPI_Finalize (see t/train.t): no leak checks under mpirun.
[ -n "$GPT_ASAN" ] && export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/parallel-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
run() { timeout -k 10 300 mpirun "$@"; }

# ---- the mesh ----
run -np 4 "$train" -c tiny-gpt2 --tp 2 --print-mesh >"$tmp/mesh" 2>"$tmp/err"
printf '%s\n' "rank 0/4: dp 0/2 tp 0/2 pp 0/1 ep 0/1" "rank 1/4: dp 0/2 tp 1/2 pp 0/1 ep 0/1" \
    "rank 2/4: dp 1/2 tp 0/2 pp 0/1 ep 0/1" "rank 3/4: dp 1/2 tp 1/2 pp 0/1 ep 0/1" >"$tmp/want"
cmp -s "$tmp/mesh" "$tmp/want"
ok $? "--print-mesh: 4 ranks as dp 2 x tp 2, tp fastest"
run -np 4 "$train" -c tiny-gpt2 --set parallel.pp=2 --set parallel.tp=2 --print-mesh 2>>"$tmp/err" | sed -n 3p >"$tmp/mesh"
grep -qx "rank 2/4: dp 0/1 tp 0/2 pp 1/2 ep 0/1" "$tmp/mesh"
ok $? "the parallel: section sets the mesh; pp is the slowest axis"
run -np 2 "$train" -c tiny-gpt2 --tp 3 --print-mesh >/dev/null 2>"$tmp/bad"
[ $? -ne 0 ] && grep -q "do not divide" "$tmp/bad"
ok $? "a mesh that does not fit the launched ranks is an error"

# ---- the TP model against one rank ----
for m in tiny-gpt2 tiny-gpt-oss; do
    run -np 2 "$tools/tp-check" "t/data/ref/$m" 1e-4 >"$tmp/out" 2>>"$tmp/err"
    st=$?
    diag "$tmp/out"
    ok $st "TP=2 $m: loss, logits, gradients and cached inference equal one rank (1e-4 relative)"
done

# ---- training ----
awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%d ", (i * 7 + int(i / 13)) % 509 + 100; print "" }' |
    "$bin/gpt-tokenize" pack --vocab-size 50257 -o "$tmp/syn.tok"
D="-d $tmp/syn.tok --seq-len 32 -b 4 -n 4 --lr 3e-3 --warmup 2 -q"
maxdiff="$tools/ckpt-maxdiff"
close() { # A B what
    d=$("$maxdiff" "$1" "$2")
    echo "# $3: max |param diff| = $d"
    awk -v d="${d%% *}" 'BEGIN { exit !(d != "" && d < 1e-4) }'
}
for c in tiny-gpt2 tiny-gpt-oss; do
    "$train" -c $c $D -o "$tmp/$c-1" 2>>"$tmp/err" && run -np 2 "$train" -c $c $D --tp 2 -o "$tmp/$c-2" 2>>"$tmp/err" &&
        close "$tmp/$c-1" "$tmp/$c-2" "$c, 4 steps, --tp 2 vs --tp 1"
    ok $? "gpt-train --tp 2 reproduces --tp 1 ($c)"
done
"$train" -c tiny-gpt2 $D --grad-accum 2 -o "$tmp/a2" 2>>"$tmp/err" &&
    run -np 4 "$train" -c tiny-gpt2 $D --tp 2 --zero1 -o "$tmp/dt" 2>>"$tmp/err" &&
    close "$tmp/a2" "$tmp/dt" "dp 2 x tp 2 (ZeRO-1) vs one rank, global batch 8"
ok $? "dp 2 x tp 2 with ZeRO-1 reproduces one rank"
run -np 4 "$train" -c tiny-gpt2 $D --tp 2 --zero1 --no-overlap-grad-reduce -o "$tmp/dt-off" 2>>"$tmp/err" &&
    d=$("$maxdiff" "$tmp/dt" "$tmp/dt-off") && echo "# dp 2 x tp 2 (ZeRO-1), gradient reduction overlapped vs after backward: max |param diff| = $d (want 0)" &&
    [ "${d%% *}" = 0 ]
ok $? "dp 2 x tp 2: the reduction overlapped with backward gives the same bits as after it"
run -np 2 "$train" -c tiny-gpt2 $D --tp 2 --stop-at 2 -o "$tmp/mix" 2>>"$tmp/err" &&
    "$train" -c tiny-gpt2 $D --resume -o "$tmp/mix" 2>>"$tmp/err" &&
    close "$tmp/tiny-gpt2-1" "$tmp/mix" "--tp 2 to step 2, resumed under --tp 1 to 4, vs --tp 1"
ok $? "a checkpoint saved under TP=2 resumes under TP=1"

# ---- pipeline parallelism: the grad_accum micro-batches are the pipeline's ----
for s in gpipe 1f1b; do
    run -np 2 "$train" -c tiny-gpt2 $D --grad-accum 2 --pp 2 --pp-schedule $s -o "$tmp/pp-$s" 2>>"$tmp/err" &&
        close "$tmp/a2" "$tmp/pp-$s" "tiny-gpt2, --pp 2 $s vs one rank, 2 micro-batches"
    ok $? "gpt-train --pp 2 ($s) reproduces one rank (tiny-gpt2, tied embedding)"
done
"$train" -c tiny-gpt-oss $D --grad-accum 2 -o "$tmp/oss-a2" 2>>"$tmp/err"
for s in gpipe 1f1b; do
    run -np 2 "$train" -c tiny-gpt-oss $D --grad-accum 2 --pp 2 --pp-schedule $s -o "$tmp/oss-pp-$s" 2>>"$tmp/err" &&
        close "$tmp/oss-a2" "$tmp/oss-pp-$s" "tiny-gpt-oss, --pp 2 $s vs one rank, 2 micro-batches"
    ok $? "gpt-train --pp 2 ($s) reproduces one rank (tiny-gpt-oss, aux loss)"
done
run -np 4 "$train" -c tiny-gpt2 $D --pp 2 --zero1 --pp-schedule 1f1b -o "$tmp/dp-pp" 2>>"$tmp/err" &&
    close "$tmp/a2" "$tmp/dp-pp" "dp 2 x pp 2 (1F1B, ZeRO-1) vs one rank, global batch 8"
ok $? "dp 2 x pp 2 reproduces one rank"
run -np 4 "$train" -c tiny-gpt2 $D --grad-accum 2 --pp 2 --tp 2 -o "$tmp/tp-pp" 2>>"$tmp/err" &&
    close "$tmp/a2" "$tmp/tp-pp" "tp 2 x pp 2 (GPipe) vs one rank, 2 micro-batches"
ok $? "tp 2 x pp 2 reproduces one rank"
run -np 2 "$train" -c tiny-gpt2 $D --grad-accum 2 --pp 2 --stop-at 2 -o "$tmp/ppmix" 2>>"$tmp/err" &&
    "$train" -c tiny-gpt2 $D --grad-accum 2 --resume -o "$tmp/ppmix" 2>>"$tmp/err" &&
    close "$tmp/a2" "$tmp/ppmix" "--pp 2 to step 2, resumed on one rank to 4, vs one rank"
ok $? "a checkpoint saved under PP=2 resumes on one rank"
# the issue's case: saved under tp 2 x pp 2, resumed under dp 2 (same global batch: 2 x 4 windows)
run -np 4 "$train" -c tiny-gpt2 $D --grad-accum 2 --pp 2 --tp 2 --stop-at 2 -o "$tmp/tpppmix" 2>>"$tmp/err" &&
    run -np 2 "$train" -c tiny-gpt2 $D --resume -o "$tmp/tpppmix" 2>>"$tmp/err" &&
    close "$tmp/a2" "$tmp/tpppmix" "tp 2 x pp 2 to step 2, resumed under dp 2 to 4, vs one rank"
ok $? "a checkpoint saved under tp 2 x pp 2 resumes under dp 2"

# ---- inference across ranks ----
shared=${GPT_SHARED:-../shared}
if [ -f "$shared/tokenizers/r50k_base.tiktoken" ]; then
    GPT_TOKENIZER_PATH=$(cd "$shared/tokenizers" && pwd)
    export GPT_TOKENIZER_PATH
    G="-m $tmp/tiny-gpt2-1 -p Hello -p 'The quick brown' -n 16 --temperature 0 -q"
    eval "\"$bin/gpt-generate\" $G" >"$tmp/gen1" 2>>"$tmp/err" &&
        eval "run -np 2 \"$bin/gpt-generate\" $G --tp 2" >"$tmp/gen2" 2>>"$tmp/err" &&
        [ -s "$tmp/gen1" ] && cmp "$tmp/gen1" "$tmp/gen2"
    ok $? "gpt-generate --tp 2 under mpirun prints the single-rank greedy completions"
else
    skip "no shared tokenizers at $shared"
fi
grep -v OpenBLAS "$tmp/err" | diag
