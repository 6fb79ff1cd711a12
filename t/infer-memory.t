#!/bin/sh
# Inference across ranks reads only each rank's piece (model_piece.h): on a random-weight gpt2-124m
# checkpoint (~500 MB of fp32 parameters), the peak RSS of every rank of `gpt-generate --tp 2` and
# `--pp 2` is below 0.75 x the single-rank run's (measured with getrusage by t/tools/maxrss; a rank
# that loaded the whole model first would exceed it), and the greedy tokens equal the single rank's
# (tensors streamed in several read chunks, cut mid-row).
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
tools=${GPT_TBIN:-$root/t/bin}/../tools
cd "$root" || exit 1
N=4
echo "1..$N"
n=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }
skip_all() { i=0; while [ $i -lt $N ]; do i=$((i + 1)); echo "ok $i # SKIP $1"; done; exit 0; }
command -v mpirun >/dev/null 2>&1 || skip_all "mpirun not installed"
"$bin/gpt-train" --help 2>&1 | grep -q "mpirun -np" || skip_all "built without MPI"
[ -x "$tools/maxrss" ] && [ -x "$tools/rand-ckpt" ] || skip_all "t/tools/maxrss and rand-ckpt not built"
# sanitizers' shadow memory and quarantine swamp the resident sizes measured here
[ -n "$GPT_ASAN" ] && skip_all "RSS is not meaningful under ASan"
shared=${GPT_SHARED:-../shared}
[ -f "$shared/tokenizers/vocab.bpe" ] || skip_all "no shared tokenizers at $shared"
GPT_TOKENIZER_PATH=$(cd "$shared/tokenizers" && pwd)
export GPT_TOKENIZER_PATH
export OMP_NUM_THREADS=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/infer-mem-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
run() { r_np=$1; shift; timeout -k 10 300 mpirun -np "$r_np" "$@" </dev/null; }

"$tools/rand-ckpt" share/configs/gpt2-124m.yaml "$tmp/ck" 7 bf16 2>"$tmp/err"
ok $? "a random gpt2-124m checkpoint (bf16 on disk, fp32 in memory)"
printf '464\n2068\n7586\n21831\n' | "$bin/gpt-tokenize" pack --vocab-size 50257 >"$tmp/p.tok"
G="$bin/gpt-generate -m $tmp/ck --tokens -f $tmp/p.tok -n 6 --eos -1 -q"
"$tools/maxrss" "$tmp/rss1" $G >"$tmp/g1.tok" 2>>"$tmp/err"
one=$(cat "$tmp/rss1" 2>/dev/null || echo 0)
echo "# one rank: peak RSS $one KiB"
for mode in tp pp; do
    rm -f "$tmp/rss.$mode".*
    run 2 "$tools/maxrss" "$tmp/rss.$mode" $G --$mode 2 >"$tmp/g.$mode.tok" 2>>"$tmp/err" &&
        cmp -s "$tmp/g1.tok" "$tmp/g.$mode.tok" && [ "$(wc -c <"$tmp/g1.tok")" -gt 16 ] &&
        python3 - "$one" "$tmp/rss.$mode".* <<'PY'
import sys
one = int(sys.argv[1])
ranks = [int(open(f).read()) for f in sys.argv[2:]]
for r, k in enumerate(ranks):
    print("# rank %d: peak RSS %d KiB = %.2f x one rank's" % (r, k, k / one))
sys.exit(0 if one > 0 and len(ranks) == 2 and all(k < 0.75 * one for k in ranks) else 1)
PY
    ok $? "gpt-generate --$mode 2: the single-rank greedy tokens, every rank's peak RSS < 0.75 x one rank's"
done
# a rank that fails alone (its stage's tensor is corrupt) stops every rank, with one message
f=$(ls "$tmp/ck"/step-*/model*.safetensors* | head -1)
size=$(wc -c <"$f")
printf 'XXXX' | dd of="$f" bs=1 seek=$((size - 100)) conv=notrunc 2>/dev/null
run 2 $G --pp 2 >/dev/null 2>"$tmp/bad"
[ $? -ne 0 ] && [ "$(grep -c 'is corrupt' "$tmp/bad")" -eq 1 ]
ok $? "--pp 2 with a corrupt tensor on stage 1 only: every rank stops, one message"
grep -v OpenBLAS "$tmp/err" "$tmp/bad" | sed 's/^/# /'
