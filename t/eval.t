#!/bin/sh
# gpt-eval on the tiny fixtures equals the loss transformers computes (t/data/gen/eval.txt,
# scripts/make-generate-fixtures.py), through the program: token stream in, numbers out.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
cd "$root" || exit 1
shared=${GPT_SHARED:-../shared}
if [ ! -f "$shared/tokenizers/vocab.bpe" ] || [ ! -f "$shared/tokenizers/o200k_base.tiktoken" ]; then
    echo "1..0 # SKIP no shared tokenizers at $shared"; exit 0
fi
if [ ! -x "$bin/gpt-eval" ]; then echo "1..0 # SKIP $bin/gpt-eval not built"; exit 0; fi
GPT_TOKENIZER_PATH=$(cd "$shared/tokenizers" && pwd)
export GPT_TOKENIZER_PATH
OMP_NUM_THREADS=1
export OMP_NUM_THREADS

n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eval-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

grep -v '^#' t/data/gen/eval.txt | while IFS='|' read -r model sl sr ids nll ns nc; do
    printf '%s\n' "$ids" | tr ',' '\n' | "$bin/gpt-tokenize" pack --vocab-size 200019 >"$tmp/d.tok" || echo fail
    out=$("$bin/gpt-eval" -m "t/data/ref/$model" --tokens --data "$tmp/d.tok" --seq-len "$sl" --stride "$sr" --json -q 2>"$tmp/err")
    echo "$model|$sl|$sr|$nll|$ns|$nc|$?|$out"
done >"$tmp/results"
while IFS='|' read -r model sl sr nll ns nc st out; do
    python3 - "$nll" "$ns" "$nc" "$out" <<'PY'
import json, math, sys
nll, ns, nc, out = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
want = nll / ns
ok = out["scored"] == ns and abs(out["loss"] - want) <= 1e-5 * want and abs(out["accuracy"] - nc / ns) < 1e-9
ok = ok and abs(out["perplexity"] - math.exp(want)) <= 1e-4 * math.exp(want)
sys.exit(0 if ok else 1)
PY
    ok $? "$model --seq-len $sl --stride $sr: loss, perplexity, accuracy equal transformers' ($(echo "$nll $ns" | awk '{printf "%.6f", $1/$2}'); got $out)"
done <"$tmp/results"

# --per-token: one line per scored token, the losses sum to the total
line=$(grep -v '^#' t/data/gen/eval.txt | head -1)
ids=$(echo "$line" | cut -d'|' -f4)
printf '%s\n' "$ids" | tr ',' '\n' | "$bin/gpt-tokenize" pack --vocab-size 50257 >"$tmp/d.tok"
"$bin/gpt-eval" -m t/data/ref/tiny-gpt2 --tokens -d "$tmp/d.tok" --seq-len 32 --stride 32 --per-token -q >"$tmp/pt" 2>"$tmp/sum"
st=$?
python3 - "$tmp/pt" "$(echo "$line" | cut -d'|' -f5)" "$(echo "$line" | cut -d'|' -f6)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = sum(r["loss"] for r in rows)
sys.exit(0 if len(rows) == int(sys.argv[3]) and abs(s - float(sys.argv[2])) < 1e-4 else 1)
PY
ok $(( $? + st )) "--per-token: JSONL of each scored token; the losses add up to transformers' total"
grep -q '^loss ' "$tmp/sum"
ok $? "--per-token: the summary goes to stderr"

# text input: bits per byte = total nll in bits / bytes of the scored tokens
printf ' a b c a b c a b c' >"$tmp/t.txt"
"$bin/gpt-eval" -m t/data/ref/tiny-gpt2 -d "$tmp/t.txt" --json -q >"$tmp/j" 2>"$tmp/err"
python3 - "$tmp/j" <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1]))
# 9 tokens " a" " b" " c" of 2 bytes each; 8 scored
ok = j["tokens"] == 9 and j["scored"] == 8 and j["scored_bytes"] == 16
ok = ok and abs(j["bits_per_byte"] - j["loss"] * 8 / math.log(2) / 16) < 1e-6
sys.exit(0 if ok else 1)
PY
ok $? "text input: tokens, scored bytes and bits per byte are consistent"

printf 'hello world' | "$bin/gpt-eval" -m t/data/ref/tiny-gpt2 -q >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "outside the model's vocabulary" "$tmp/err"
ok $? "text with ids the model does not have: clear error"
printf ' a' | "$bin/gpt-eval" -m t/data/ref/tiny-gpt2 -q >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "at least 2" "$tmp/err"
ok $? "one token: nothing to score, error"
"$bin/gpt-eval" -m t/data/ref/tiny-gpt2 --seq-len 64 -d "$tmp/t.txt" -q >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "longer than the model's context" "$tmp/err"
ok $? "--seq-len beyond the context: error"

# multiple choice: the ending the model itself prefers is the label, so accuracy is 1
cat >"$tmp/mc.jsonl" <<'J'
{"context": " a b", "endings": [" c", " a"], "label": 0}
{"context": " a", "endings": [" b c", " a a"], "label": 1}
J
"$bin/gpt-eval" -m t/data/ref/tiny-gpt2 --choice -d "$tmp/mc.jsonl" --per-token --json -q >"$tmp/mc" 2>"$tmp/err"
st=$?
python3 - "$tmp/mc" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
items, summary = rows[:-1], rows[-1]
ok = len(items) == 2 and summary["items"] == 2
acc = sum(min(range(len(r["losses"])), key=lambda i: r["losses"][i]) == r["label"] for r in items) / 2
ok = ok and abs(summary["accuracy"] - acc) < 1e-9 and all(r["pred"] == min(range(len(r["losses"])), key=lambda i: r["losses"][i]) for r in items)
sys.exit(0 if ok else 1)
PY
ok $(( $? + st )) "--choice: predictions are the lowest-loss endings and the accuracy counts them"
printf '{"context": "x"}\n' | "$bin/gpt-eval" -m t/data/ref/tiny-gpt2 --choice -q >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "line 1" "$tmp/err"
ok $? "--choice: a malformed line is an error naming it"

# --precision bf16: the loss of the model with bf16 GEMM operands: near fp32's (the tiny models'
# logits move by bf16's rounding), not equal to it, and the same with AMX as emulated
"$bin/gpt-eval" -m t/data/ref/tiny-gpt2 -d "$tmp/t.txt" --json -q >"$tmp/f32" 2>"$tmp/err" &&
    "$bin/gpt-eval" -m t/data/ref/tiny-gpt2 -d "$tmp/t.txt" --json -q --precision bf16 >"$tmp/b16" 2>>"$tmp/err" &&
    GPT_AMX=0 "$bin/gpt-eval" -m t/data/ref/tiny-gpt2 -d "$tmp/t.txt" --json -q --precision bf16 >"$tmp/b16e" 2>>"$tmp/err"
st=$?
python3 - "$tmp/f32" "$tmp/b16" "$tmp/b16e" <<'PY'
import json, sys
f, b, e = (json.load(open(p))["loss"] for p in sys.argv[1:4])
ok = f != b and abs(b - f) <= 1e-2 * f and abs(b - e) <= 1e-5 * e
print("# fp32 %.7f bf16 %.7f bf16 emulated %.7f" % (f, b, e))
sys.exit(0 if ok else 1)
PY
ok $(( $? + st )) "--precision bf16: loss within 1% of fp32's, not equal, and AMX equals the emulation to 1e-5"

echo "1..$n"
[ $fails -eq 0 ]
