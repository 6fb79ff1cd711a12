#!/bin/sh
# gpt-train --plan: per-rank memory for a mesh without allocating. The big model's plans print and
# keep their invariants (ZeRO-1 shrinks the optimizer, more ranks shrink the shards, bad meshes are
# refused with the constraint named); for small configs the estimate matches the peak RSS that
# gpt-train itself reports (getrusage) within 25% + 48 MiB (the process's own libraries, OpenBLAS
# buffers and allocator slack are not in the plan: about 32 MiB here).
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
cd "$root" || exit 1
export GPT_CONFIG_PATH="$root/share/configs"
export OMP_NUM_THREADS=1

n=0
ok() { # status description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
diag() { sed 's/^/# /' "$@"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/train-plan-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
train="$bin/gpt-train"
peak() { sed -n 's/^peak per rank: \([0-9]*\) bytes (ZeRO-1: \([0-9]*\) bytes)$/\1 \2/p' "$1"; }

# ---- gpt-oss-120b on 8, 64 and 72 ranks ----
B="-c gpt-oss-120b --set train.seq_len=4096 --set train.micro_batch=1 --plan"
"$train" $B --dp 8 >"$tmp/p8" 2>"$tmp/err"
ok $? "plan: gpt-oss-120b, dp 8"
diag "$tmp/p8"
"$train" $B --dp 8 --tp 8 --ep 8 >"$tmp/p64" 2>>"$tmp/err"
ok $? "plan: gpt-oss-120b, dp 8 x tp 8, ep 8 (64 ranks)"
diag "$tmp/p64"
"$train" $B --dp 8 --pp 9 --ep 8 --set train.grad_accum=16 >"$tmp/p72" 2>>"$tmp/err"
ok $? "plan: gpt-oss-120b, dp 8 x pp 9, ep 8 (72 ranks)"
diag "$tmp/p72"
set -- $(peak "$tmp/p8")
p8=$1 z8=$2
set -- $(peak "$tmp/p64")
p64=$1
set -- $(peak "$tmp/p72")
p72=$1
[ -n "$p8" ] && [ -n "$z8" ] && [ -n "$p64" ] && [ -n "$p72" ]
ok $? "every plan ends with the peak per rank"
awk -v a="$p8" -v z="$z8" 'BEGIN { exit !(z < a) }'
ok $? "ZeRO-1 lowers the dp 8 peak ($z8 < $p8 bytes)"
awk -v a="$p8" -v b="$p64" -v c="$p72" 'BEGIN { exit !(b < a / 4 && c < a / 4) }'
ok $? "64 and 72 ranks hold less than a quarter of dp 8's per rank"
grep -q "in flight on stage 0" "$tmp/p72" && grep -q "^    8   32-35 " "$tmp/p72"
ok $? "pp 9: 4 layers per stage, the last stage is 32-35"
# the parameter count at dp 1 is the model's (gpt-oss-120b: about 116.8 billion with padding)
"$train" -c gpt-oss-120b --plan >"$tmp/p1" 2>>"$tmp/err"
grep -q "116.8 billion parameters" "$tmp/p1"
ok $? "dp 1: 116.8 billion parameters"

"$train" $B --tp 3 >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "does not divide the 64 attention heads" "$tmp/err"
ok $? "tp 3 is refused: 64 heads"
diag "$tmp/err"
"$train" $B --dp 4 --ep 8 >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "ep 8 must divide --dp 4" "$tmp/err"
ok $? "ep 8 over dp 4 is refused"
"$train" $B --pp 37 >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "more pipeline stages than the model's 36 layers" "$tmp/err"
ok $? "pp 37 > 36 layers is refused"

# ---- the estimate against the measured peak RSS ----
if [ -n "$GPT_ASAN" ]; then
    skip "RSS against the plan: ASan's shadow memory and quarantine inflate the RSS"
    skip "RSS against the plan (MoE)"
else
    awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%d ", (i * 7 + int(i / 13)) % 509 + 100; print "" }' |
        "$bin/gpt-tokenize" pack --vocab-size 50257 -o "$tmp/syn.tok"
    awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%d ", (i * 7 + int(i / 13)) % 500; print "" }' |
        "$bin/gpt-tokenize" pack --vocab-size 512 -o "$tmp/small.tok"
    data=$tmp/syn.tok
    measure() { # config-args... -> plan bytes and measured MiB in $est and $rss
        A="$* -d $data --seq-len 64 -b 8 -n 2 --warmup 1 --log-interval 100 --eval-interval 0"
        "$train" $A --plan >"$tmp/plan" 2>"$tmp/err"
        est=$(peak "$tmp/plan" | cut -d' ' -f1)
        "$train" $A -o "$tmp/run" >/dev/null 2>"$tmp/log"
        rss=$(sed -n 's/^gpt-train: peak memory (max RSS) of rank 0: \([0-9.]*\) MiB$/\1/p' "$tmp/log")
        rm -rf "$tmp/run"
        [ -n "$rss" ] || diag "$tmp/log"
    }
    # What the process costs before the model does (its libraries, OpenBLAS's and the threads'
    # buffers) is measured, not guessed: a run of a model too small to matter.
    data=$tmp/small.tok
    measure -c tiny-gpt2 --set model.d_model=16 --set model.n_layers=1 --set model.mlp.d_ff=64 \
        --set model.vocab_size=512 --set model.n_heads=2
    base_est=$est base_rss=$rss data=$tmp/syn.tok
    echo "# baseline (a 1-layer, 16-wide model): plan $(awk -v e="$base_est" 'BEGIN { printf "%.1f", e / 1048576 }') MiB, measured $base_rss MiB"
    check_rss() { # description config-args...
        d=$1
        shift
        measure "$@"
        echo "# $d: plan $(awk -v e="$est" 'BEGIN { printf "%.1f", e / 1048576 }') MiB, measured max RSS $rss MiB"
        [ -n "$est" ] && [ -n "$rss" ] && [ -n "$base_rss" ] &&
            awk -v e="$est" -v r="$rss" -v b="$base_rss" -v be="$base_est" \
                'BEGIN { e /= 1048576; o = b - be / 1048576; d = r - o - e; if (d < 0) d = -d; exit !(d <= 0.25 * e + 16) }'
        ok $? "$d: plan + the measured process overhead is within 25% + 16 MiB of the measured peak RSS"
    }
    # dense: the 512 x 50304 logits dominate the activations; MoE: the experts dominate the parameters
    check_rss "GPT-2 class, 7.2M parameters" -c tiny-gpt2 --set model.d_model=128 --set model.n_layers=4 \
        --set model.mlp.d_ff=512
    check_rss "MoE, 16M parameters" -c tiny-gpt-oss --set model.d_model=128 --set model.mlp.n_experts=8 \
        --set model.mlp.d_expert=256
fi
echo "1..$n"
