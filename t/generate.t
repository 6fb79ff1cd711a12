#!/bin/sh
# gpt-generate as a Unix program, on the tiny GPT-2 fixture (t/data/ref/tiny-gpt2: 384 ids of
# the gpt2 vocabulary, a 32-token context). Expected greedy tokens come from Hugging Face
# generate (t/data/gen/generate.txt, scripts/make-generate-fixtures.py).
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
cd "$root" || exit 1
shared=${GPT_SHARED:-../shared}
if [ ! -f "$shared/tokenizers/vocab.bpe" ]; then echo "1..0 # SKIP no shared tokenizers at $shared"; exit 0; fi
if [ ! -x "$bin/gpt-generate" ]; then echo "1..0 # SKIP $bin/gpt-generate not built"; exit 0; fi
GPT_TOKENIZER_PATH=$(cd "$shared/tokenizers" && pwd)
export GPT_TOKENIZER_PATH
OMP_NUM_THREADS=1 # tiny model: threads only cost
export OMP_NUM_THREADS
M=t/data/ref/tiny-gpt2
G="$bin/gpt-generate -m $M -q"

n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/generate-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

printf 'a\nb\n' | $G -n 5 >"$tmp/out" 2>"$tmp/err"
ok $? "two prompts on stdin: exit 0"
[ -s "$tmp/out" ] && ! grep -q '^gpt-generate' "$tmp/err"
ok $? "completions on stdout, no log from gpt-generate with -q"
printf 'a\nb\n' | $G -n 5 --jsonl >"$tmp/out" 2>"$tmp/err"
st=$?
printf 'a\nb\n' | sed 's/.*/{"prompt": "&"}/' | $G -n 5 --jsonl >"$tmp/out" 2>"$tmp/err"
[ $? -eq 0 ] && [ "$(wc -l <"$tmp/out")" -eq 2 ] && grep -c '"finish_reason":"length"' "$tmp/out" | grep -qx 2 &&
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]' "$tmp/out" 2>/dev/null
ok $? "--jsonl: two valid JSON (UTF-8) lines with finish_reason (non-JSON input gave exit $st)"
[ $st -ne 0 ]
ok $? "--jsonl with a line that is not JSON fails"

printf '' | $G >"$tmp/out" 2>"$tmp/err"
[ $? -eq 0 ] && [ ! -s "$tmp/out" ]
ok $? "empty input: no output, exit 0"

# greedy of prompt "a" (id 64) == Hugging Face generate
want=$(awk -F'|' '$1=="tiny-gpt2" && $2==1 && $6=="-" && $7=="64" {print $8}' t/data/gen/generate.txt)
$G -p a -n 12 --jsonl >"$tmp/out" 2>"$tmp/err"
got=$(LC_ALL=C sed -e 's/.*"tokens":\[\([0-9,]*\)\].*/\1/' "$tmp/out")
[ -n "$want" ] && [ "$got" = "$want" ]
ok $? "-p a --jsonl: greedy tokens equal HF generate ($got)"

# token streams in and out compose with gpt-tokenize
printf '64\n' | "$bin/gpt-tokenize" pack --vocab-size 50257 >"$tmp/p.tok" &&
    $G --tokens -n 12 -f "$tmp/p.tok" >"$tmp/o.tok" 2>"$tmp/err" &&
    "$bin/gpt-tokenize" unpack "$tmp/o.tok" >"$tmp/ids" 2>>"$tmp/err"
st=$?
got=$(tr -s ' \n' ',,' <"$tmp/ids" | sed 's/,$//')
[ $st -eq 0 ] && [ "$got" = "$want,50256" ]
ok $? "--tokens: token stream in, token stream out (completion + <|endoftext|>) ($got)"
[ $st -eq 0 ] || sed 's/^/# /' "$tmp/err"

printf '500\n' | "$bin/gpt-tokenize" pack --vocab-size 50257 >"$tmp/bad.tok"
$G --tokens -f "$tmp/bad.tok" >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "outside the model's vocabulary" "$tmp/err"
ok $? "--tokens with an id the model does not have: error"

long=$(awk 'BEGIN { for (i = 0; i < 40; i++) printf " a"; print "" }')
$G -p "$long" -n 4 >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "leaves no room in the model's context" "$tmp/err"
ok $? "a prompt longer than the context: clear error, exit != 0"
printf 'a\n%s\nb\n' "$long" | $G -n 3 --jsonl 2>"$tmp/err" | sed 's/x/x/' >"$tmp/out"
[ "$(wc -l <"$tmp/out")" -eq 3 ] && grep -q '"finish_reason":"error"' "$tmp/out"
ok $? "the other prompts still complete; the long one is reported in place"

# a prompt of 30 tokens in a 32-token context: stops at the context
short=$(awk 'BEGIN { for (i = 0; i < 30; i++) printf " a"; print "" }')
$G -p "$short" -n 10 --jsonl >"$tmp/out" 2>"$tmp/err"
[ $? -eq 0 ] && grep -q '"finish_reason":"length"' "$tmp/out" && [ "$(grep -o ',' "$tmp/out" | wc -l)" -ge 3 ]
ok $? "generation stops when the context is full (finish_reason length)"

# stop strings: the greedy text of "a" is 6 x byte 0xE7 then "ent" (ids 163, 298)
$G -p a -n 12 --stop ent --no-stream >"$tmp/out" 2>"$tmp/err"
printf '\347\347\347\347\347\347\n' >"$tmp/want"
cmp -s "$tmp/out" "$tmp/want"
ok $? "--stop: the completion ends before the stop string"
$G -p a -n 12 --stop ent >"$tmp/out2" 2>"$tmp/err"
cmp -s "$tmp/out2" "$tmp/want"
ok $? "streaming a single prompt holds back a possible stop string and prints the same"
$G -p a -n 12 --eos 298 --jsonl >"$tmp/out" 2>"$tmp/err"
grep -q '"tokens":\[163,163,163,163,163,163,298\],"finish_reason":"stop"' "$tmp/out"
ok $? "--eos ID stops on it (kept in tokens, finish_reason stop)"

$G -p a -n 8 --temperature 1 --seed 7 >"$tmp/s1" 2>"$tmp/err" && $G -p a -n 8 --temperature 1 --seed 7 >"$tmp/s2" 2>/dev/null
cmp -s "$tmp/s1" "$tmp/s2"
ok $? "--seed: the same seed gives the same sample"
$bin/gpt-generate -m $M -p a -n 2 --temperature 1 >"$tmp/out" 2>"$tmp/err"
grep -q '^gpt-generate: seed [0-9][0-9]*$' "$tmp/err"
ok $? "without --seed the seed chosen is printed on stderr"
printf '{"prompt":"a"}\n{"prompt":"b"}\n{"prompt":"c"}\n' | $G -n 6 --temperature 0.7 --top-k 5 --top-p 0.9 --seed 3 --batch-size 2 --jsonl >"$tmp/out" 2>"$tmp/err"
[ $? -eq 0 ] && [ "$(wc -l <"$tmp/out")" -eq 3 ]
ok $? "sampling with filters in batches of 2: three completions"
printf 'a\nb\nc\n' | $G -n 6 --batch-size 1 >"$tmp/b1" 2>/dev/null && printf 'a\nb\nc\n' | $G -n 6 --batch-size 3 >"$tmp/b3" 2>/dev/null
cmp -s "$tmp/b1" "$tmp/b3"
ok $? "greedy output does not depend on the batch size"
$G -p a -n 12 --num-beams 3 --jsonl >"$tmp/out" 2>"$tmp/err"
want=$(awk -F'|' '$1=="tiny-gpt2" && $2==3 && $3=="1.0" && $6=="-" && $7=="64" {print $8}' t/data/gen/generate.txt)
got=$(LC_ALL=C sed -e 's/.*"tokens":\[\([0-9,]*\)\].*/\1/' "$tmp/out")
[ -n "$want" ] && [ "$got" = "$want" ]
ok $? "--num-beams 3 equals HF beam search ($got)"

$G -p a --chat >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "harmony" "$tmp/err"
ok $? "--chat on a model without the harmony vocabulary: clear error"
$G -p a --temperature x >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ]
ok $? "a bad option value is a usage error (exit 2)"
for dt in bf16 int8; do
    printf 'a\n' | $G -n 8 --cache-dtype $dt >"$tmp/$dt" 2>"$tmp/err"
    [ $? -eq 0 ] && [ -s "$tmp/$dt" ]
    ok $? "--cache-dtype $dt generates through a $dt KV cache"
done
$G -p a --cache-dtype fp8 >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "cache-dtype" "$tmp/err"
ok $? "an unknown --cache-dtype is a usage error naming the option"
# bf16 operands: on AMX from packed weights, elsewhere emulated; the two differ only in the
# order of fp32 sums, so greedy tokens agree
$G -p a -n 12 --precision bf16 --jsonl >"$tmp/bf" 2>"$tmp/err" &&
    GPT_AMX=0 $G -p a -n 12 --precision bf16 --jsonl >"$tmp/bf-emu" 2>>"$tmp/err"
[ $? -eq 0 ] && grep -q '"tokens":\[[0-9]*\(,[0-9]*\)\{11\}\]' "$tmp/bf" && cmp -s "$tmp/bf" "$tmp/bf-emu"
ok $? "--precision bf16 generates 12 tokens, the same with AMX as emulated (GPT_AMX=0)"
# the KV cache follows --precision unless --cache-dtype says otherwise (the timing line names it)
G1="$bin/gpt-generate -m $M"
$G1 -p a -n 4 --precision bf16 >/dev/null 2>"$tmp/e1" && $G1 -p a -n 4 >/dev/null 2>"$tmp/e2" &&
    $G1 -p a -n 4 --precision bf16 --cache-dtype f32 >/dev/null 2>"$tmp/e3"
[ $? -eq 0 ] && grep -q "KV cache bf16" "$tmp/e1" && grep -q "KV cache f32" "$tmp/e2" && grep -q "KV cache f32" "$tmp/e3"
ok $? "--precision bf16 keeps a bf16 KV cache by default; f32 without it or with --cache-dtype f32"
$G -p a --precision fp8 >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "precision" "$tmp/err"
ok $? "an unknown --precision is a usage error naming the option"
$bin/gpt-generate -m t/data/nonexistent -p a >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "nonexistent" "$tmp/err"
ok $? "a missing model: error naming it"

echo "1..$n"
[ $fails -eq 0 ]
