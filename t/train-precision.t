#!/bin/sh
# gpt-train --precision bf16 | fp16: mixed-precision training on the CPU backend (GEMM operands
# rounded, fp32 master weights; t/test_half.c checks the rounding against torch). bf16 trains
# close to fp32 but not bit-equal to it; fp16 with a loss scale too large overflows, skips those
# steps, halves the scale each time, logs it, then trains and grows the scale after `interval`
# clean steps; an fp16 run resumed from a checkpoint is bit-identical (the scaler state is saved).
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
tools=${GPT_TBIN:-$root/t/bin}/../tools
cd "$root" || exit 1
export GPT_CONFIG_PATH="$root/share/configs"
export OMP_NUM_THREADS=1

n=0
ok() { # status description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi
}
diag() { sed 's/^/# /' "$@"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/train-prec-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
train="$bin/gpt-train"

awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%d ", (i * 7 + int(i / 13)) % 509 + 100; print "" }' |
    "$bin/gpt-tokenize" pack --vocab-size 50257 -o "$tmp/syn.tok"
A="-c tiny-gpt2 -d $tmp/syn.tok --seq-len 32 -b 4 --lr 1e-2 --warmup 1 --seed 5"
losses() { grep -o '"loss":[0-9.naif-]*' "$1/metrics.jsonl" | cut -d: -f2 | tr '\n' ' '; }

"$train" $A -n 8 -q -o "$tmp/fp32" 2>"$tmp/err" && "$train" $A -n 8 -q --precision bf16 -o "$tmp/bf16" 2>>"$tmp/err"
ok $? "8 steps in fp32 and in bf16"
diag "$tmp/err"
"$train" $A -n 1 --precision bf16 -o "$tmp/say1" 2>"$tmp/say1.err" &&
    GPT_AMX=0 "$train" $A -n 1 --precision bf16 -o "$tmp/say2" 2>"$tmp/say2.err"
[ $? -eq 0 ] && grep -q "bf16 GEMMs are emulated" "$tmp/say2.err" &&
    grep -q -E "bf16 GEMMs (run on AMX tiles|are emulated)" "$tmp/say1.err"
ok $? "gpt-train says whether bf16 runs on AMX tiles or is emulated (GPT_AMX=0: emulated): $(grep -h -o 'bf16 GEMMs [A-Za-z ]*' "$tmp/say1.err" | head -1)"
echo "# fp32 losses: $(losses "$tmp/fp32")"
echo "# bf16 losses: $(losses "$tmp/bf16")"
d=$("$tools/ckpt-maxdiff" "$tmp/fp32" "$tmp/bf16")
echo "# bf16 vs fp32 after 8 steps: max |param diff| = $d"
awk -v d="${d%% *}" 'BEGIN { exit !(d != "" && d > 0) }'
ok $? "bf16 parameters differ from fp32: the operands were rounded"
awk -v a="$(losses "$tmp/fp32")" -v b="$(losses "$tmp/bf16")" 'BEGIN {
    na = split(a, x, " "); nb = split(b, y, " ")
    if (na != 8 || nb != 8) exit 1
    for (i = 1; i <= 8; i++) { e = x[i] - y[i]; if (e < 0) e = -e; if (e > 0.02 * x[i]) exit 1 }
    exit !(y[8] < y[1] - 0.5) }'
ok $? "bf16 losses within 2% of fp32 at every step, and falling"

# fp16 with a scale of 2^30: the first backward passes overflow fp16 (65504) and are skipped
S="--precision fp16 --set train.loss_scale.init=1073741824 --set train.loss_scale.interval=3"
"$train" $A -n 16 $S -o "$tmp/fp16" 2>"$tmp/err"
ok $? "fp16 with loss scale 2^30: exit 0"
grep -q "gradient overflow at loss scale 1.07374e+09: step skipped, scale now 5.36871e+08" "$tmp/err"
ok $? "the overflow is logged with the old and new scale"
grep -o '"loss":[0-9.]*\|"loss_scale":[0-9.e+]*\|"skipped":[a-z]*' "$tmp/fp16/metrics.jsonl" | cut -d: -f2 | paste -d' ' - - - >"$tmp/sc"
diag "$tmp/sc"
awk 'NR == 1 { first = $1 } { l[NR] = $1; s[NR] = $2; k[NR] = $3 }
     END {
        nskip = 0; for (i = 1; i <= NR; i++) nskip += k[i] == "true"
        if (NR != 16 || nskip < 1 || nskip > 12) exit 1
        for (i = 1; i < NR; i++) {    # GradScaler: halve on a skip; double after 3 clean steps in a row
            if (k[i] == "true") { run = 0; if (s[i + 1] != s[i] / 2) exit 2; continue }
            if (++run == 3) { run = 0; if (s[i + 1] != s[i] * 2) exit 3 } else if (s[i + 1] != s[i]) exit 4
        }
        exit !(l[NR] < first - 0.3) }' "$tmp/sc"
ok $? "skipped steps halve the scale, 3 clean steps in a row double it, and the loss falls ($(grep -c true "$tmp/sc") skipped)"

"$train" $A -n 12 $S -q -o "$tmp/full" 2>"$tmp/err" &&
    "$train" $A -n 12 $S -q --stop-at 6 -o "$tmp/split" 2>>"$tmp/err" &&
    "$train" $A -n 12 $S -q --resume -o "$tmp/split" 2>>"$tmp/err"
ok $? "fp16: 12 steps, and 6 + resume + 6"
diag "$tmp/err"
same=0
for f in model.safetensors blobs/optim.m blobs/optim.v blobs/train.state; do
    cmp -s "$tmp/full/step-00000012/$f" "$tmp/split/step-00000012/$f" || { same=1; echo "# differs: $f"; }
done
ok $same "fp16 resumed run is bit-identical (parameters, AdamW state, loss scale)"

echo "1..$n"
