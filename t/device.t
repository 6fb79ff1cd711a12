#!/bin/sh
# --device for gpt-eval and gpt-generate: cpu and the default (auto: cuda when built with it and a
# GPU is visible, else cpu) give the same results; unknown names and malformed cuda:N are refused.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
cd "$root" || exit 1
shared=${GPT_SHARED:-../shared}
if [ ! -f "$shared/tokenizers/vocab.bpe" ]; then echo "1..0 # SKIP no shared tokenizers at $shared"; exit 0; fi
if [ ! -x "$bin/gpt-eval" ] || [ ! -x "$bin/gpt-generate" ]; then echo "1..0 # SKIP programs not built"; exit 0; fi
GPT_TOKENIZER_PATH=$(cd "$shared/tokenizers" && pwd)
export GPT_TOKENIZER_PATH
OMP_NUM_THREADS=1
export OMP_NUM_THREADS

n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/device-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
m=t/data/ref/tiny-gpt2
# token streams: the tiny model knows ids 0..383 only
printf '%s\n' 5 17 300 42 9 128 77 301 2 64 199 12 8 250 31 90 | "$bin/gpt-tokenize" pack --vocab-size 50257 >"$tmp/d.tok"
printf '64\n' | "$bin/gpt-tokenize" pack --vocab-size 50257 >"$tmp/p.tok"

"$bin/gpt-eval" -m $m --tokens --data "$tmp/d.tok" --json -q --device cpu >"$tmp/cpu.json" 2>"$tmp/err1"
ok $? "gpt-eval --device cpu runs"
"$bin/gpt-eval" -m $m --tokens --data "$tmp/d.tok" --json -q >"$tmp/auto.json" 2>"$tmp/err2"
ok $? "gpt-eval with the default device runs"
python3 - "$tmp/cpu.json" "$tmp/auto.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
def nums(d): return {k: v for k, v in d.items() if isinstance(v, (int, float)) and 'sec' not in k and 'per_s' not in k}
x, y = nums(a), nums(b)
bad = [k for k in x if k not in y or abs(x[k] - y[k]) > 1e-4 * max(1.0, abs(x[k]))]
print("# cpu:", x)
print("# default:", y)
sys.exit(1 if bad or not x else 0)
PY
ok $? "gpt-eval: cpu and the default device agree"

"$bin/gpt-generate" -m $m --tokens -f "$tmp/p.tok" -n 8 --temperature 0 -q --device cpu >"$tmp/g1" 2>"$tmp/err3"
ok $? "gpt-generate --device cpu runs"
"$bin/gpt-generate" -m $m --tokens -f "$tmp/p.tok" -n 8 --temperature 0 -q --device auto >"$tmp/g2" 2>"$tmp/err4"
ok $? "gpt-generate --device auto runs"
[ -s "$tmp/g1" ] && cmp -s "$tmp/g1" "$tmp/g2"
ok $? "gpt-generate: greedy completions agree on cpu and auto"

for bad in bogus cuda:x cuda:-1 cudax; do
    "$bin/gpt-eval" -m $m --tokens --data "$tmp/d.tok" -q --device "$bad" >/dev/null 2>"$tmp/err"
    st=$?
    [ $st -eq 1 ] && grep -q "device" "$tmp/err"
    ok $? "gpt-eval --device $bad: exit 1 and a message ($(grep -v OpenBLAS "$tmp/err" | head -c 100))"
done
"$bin/gpt-generate" -m $m --tokens -f "$tmp/p.tok" --device gpu >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "unknown device 'gpu'" "$tmp/err"
ok $? "gpt-generate --device gpu: unknown device"

echo "1..$n"
[ $fails -eq 0 ]
