#!/bin/sh
# Inference across ranks under mpirun (tiny reference models, one thread per rank): gpt-eval with
# data parallelism (2 and 3 ranks), --tp 2, --pp 2 (tiny-gpt-oss's 3 layers split 1 + 2) and
# dp 2 x pp 2 prints the loss, perplexity and accuracy one rank prints (1e-5 relative; both also
# equal transformers' loss from t/data/gen/eval.txt), --per-token lines come out in one rank's
# order, --choice is sharded too; greedy `gpt-generate --pp 2` and `--tp 2 --pp 2` print the
# single-rank token ids (prompts crossing tiny-gpt-oss's sliding window of 4), as do beam search
# and seeded sampling under --pp 2.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
cd "$root" || exit 1
N=12
echo "1..$N"
n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }
skip_all() { i=0; while [ $i -lt $N ]; do i=$((i + 1)); echo "ok $i # SKIP $1"; done; exit 0; }
command -v mpirun >/dev/null 2>&1 || skip_all "mpirun not installed"
"$bin/gpt-train" --help 2>&1 | grep -q "mpirun -np" || skip_all "built without MPI"
shared=${GPT_SHARED:-../shared}
[ -f "$shared/tokenizers/o200k_base.tiktoken" ] && [ -f "$shared/tokenizers/vocab.bpe" ] ||
    skip_all "no shared tokenizers at $shared"
GPT_TOKENIZER_PATH=$(cd "$shared/tokenizers" && pwd)
export GPT_TOKENIZER_PATH
export OMP_NUM_THREADS=1
# MPICH's transport modules leak at MPI_Finalize (see t/train.t): no leak checks under mpirun.
[ -n "$GPT_ASAN" ] && export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/infer-par-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
run() { r_np=$1; shift; timeout -k 10 300 mpirun -np "$r_np" "$@" </dev/null; }
diag() { sed 's/^/# /' "$@"; }

# same: the two JSON summaries agree (counts exactly, loss/perplexity/accuracy to 1e-5 relative),
# and the loss equals the reference (transformers) when given
same() { # ONE PAR [NLL NS]
    python3 - "$@" <<'PY'
import json, sys
a, b = json.loads(open(sys.argv[1]).read()), json.loads(open(sys.argv[2]).read())
rel = lambda x, y: abs(x - y) <= 1e-5 * max(abs(x), abs(y), 1e-30)
ok = all(a[k] == b[k] for k in a if k in ("tokens", "scored", "scored_bytes", "items", "text_bytes"))
ok = ok and set(a) == set(b) and all(rel(a[k], b[k]) for k in a if k not in ("tokens", "scored", "scored_bytes", "items", "text_bytes"))
if len(sys.argv) > 3:
    ok = ok and rel(a["loss"], float(sys.argv[3]) / int(sys.argv[4]))
d = max((abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for k in a), default=0)
print("# max relative difference %.3g" % d)
sys.exit(0 if ok else 1)
PY
}
fixture() { # MODEL SEQ STRIDE -> $tmp/d.tok, $nll, $ns
    line=$(grep -v '^#' t/data/gen/eval.txt | awk -F'|' -v m="$1" -v l="$2" -v s="$3" '$1 == m && $2 == l && $3 == s')
    printf '%s\n' "$line" | cut -d'|' -f4 | tr ',' '\n' | "$bin/gpt-tokenize" pack --vocab-size 200019 >"$tmp/d.tok"
    nll=$(echo "$line" | cut -d'|' -f5) ns=$(echo "$line" | cut -d'|' -f6)
}

# ---- gpt-eval ----
ev() { # NP MODEL SEQ STRIDE OUT [OPTIONS]
    e_np=$1 e_o=$5
    fixture "$2" "$3" "$4"
    E="$bin/gpt-eval -m t/data/ref/$2 --tokens -d $tmp/d.tok --seq-len $3 --stride $4 --json -q -b 2"
    shift 5
    if [ "$e_np" = 1 ]; then $E "$@" >"$e_o" 2>>"$tmp/err"; else run "$e_np" $E "$@" >"$e_o" 2>>"$tmp/err"; fi
}
check() { # NP MODEL SEQ STRIDE WHAT [OPTIONS]
    c_np=$1 c_m=$2 c_sl=$3 c_sr=$4 c_what=$5; shift 5
    ev 1 "$c_m" "$c_sl" "$c_sr" "$tmp/one" && ev "$c_np" "$c_m" "$c_sl" "$c_sr" "$tmp/par" "$@" &&
        same "$tmp/one" "$tmp/par" "$nll" "$ns"
    ok $? "$c_what: $c_m --seq-len $c_sl --stride $c_sr, mpirun -np $c_np $*: the numbers of one rank and of transformers"
}
check 2 tiny-gpt-oss 16 3 "gpt-eval data parallel"
check 3 tiny-gpt2 8 3 "gpt-eval data parallel, uneven shards"
check 2 tiny-gpt-oss 64 32 "gpt-eval --tp 2" --tp 2
check 2 tiny-gpt-oss 16 16 "gpt-eval --pp 2 (layers 1 + 2)" --pp 2
check 4 tiny-gpt2 8 8 "gpt-eval dp 2 x pp 2" --pp 2
check 4 tiny-gpt-oss 16 3 "gpt-eval tp 2 x pp 2" --tp 2 --pp 2

# --per-token: the same lines in the same order
fixture tiny-gpt-oss 16 3
P="-m t/data/ref/tiny-gpt-oss --tokens -d $tmp/d.tok --seq-len 16 --stride 3 --per-token -q -b 2"
"$bin/gpt-eval" $P >"$tmp/pt1" 2>>"$tmp/err" && run 2 "$bin/gpt-eval" $P --tp 2 >"$tmp/pt2" 2>>"$tmp/err" &&
    run 3 "$bin/gpt-eval" $P >"$tmp/pt3" 2>>"$tmp/err" && python3 - "$tmp/pt1" "$tmp/pt2" "$tmp/pt3" <<'PY'
import json, sys
a, b, c = ([json.loads(l) for l in open(f)] for f in sys.argv[1:4])
def same(x, y):
    return len(x) == len(y) and all(p["pos"] == q["pos"] and p["token"] == q["token"] and p["correct"] == q["correct"]
                                    and abs(p["loss"] - q["loss"]) <= 1e-5 * abs(p["loss"]) for p, q in zip(x, y))
print("# %d lines" % len(a))
sys.exit(0 if len(a) > 50 and same(a, b) and same(a, c) else 1)
PY
ok $? "gpt-eval --per-token under --tp 2 and 3 data-parallel ranks: one rank's lines, in its order"

# --choice: items sharded over the data-parallel ranks, summary and per-item lines as one rank
cat >"$tmp/mc.jsonl" <<'J'
{"context": " a b", "endings": [" c", " a"], "label": 0}
{"context": " a", "endings": [" b c", " a a"], "label": 1}

{"context": " b", "endings": [" b c", " a a", " c"], "label": 2}
{"context": " c c", "endings": [" a", " b"], "label": 1}
J
C="-m t/data/ref/tiny-gpt2 --choice -d $tmp/mc.jsonl --per-token --json -q"
"$bin/gpt-eval" $C >"$tmp/c1" 2>>"$tmp/err" && run 4 "$bin/gpt-eval" $C --pp 2 >"$tmp/c2" 2>>"$tmp/err" &&
    python3 - "$tmp/c1" "$tmp/c2" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
ok = len(a) == len(b) == 5 and a[-1] == b[-1]
ok = ok and all(p["line"] == q["line"] and p["pred"] == q["pred"] and p["pred_norm"] == q["pred_norm"] and
                all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(p["losses"], q["losses"])) for p, q in zip(a[:-1], b[:-1]))
sys.exit(0 if ok else 1)
PY
ok $? "gpt-eval --choice, dp 2 x pp 2: one rank's items, losses and accuracy"

run 3 "$bin/gpt-eval" -m t/data/ref/tiny-gpt2 --tp 2 -d "$tmp/mc.jsonl" --choice >"$tmp/out" 2>"$tmp/bad"
[ $? -ne 0 ] && [ "$(grep -c 'do not divide' "$tmp/bad")" -eq 1 ]
ok $? "gpt-eval: a mesh that does not fit the launched ranks is one clear error"

# ---- gpt-generate --pp ----
printf '5\n17\n99\n3\n200\n199999\n7\n8\n199999\n300\n301\n302\n303\n304\n305\n306\n' |
    "$bin/gpt-tokenize" pack --vocab-size 200019 >"$tmp/p.tok"
gen() { # NP OUT [OPTIONS]
    g_np=$1 g_o=$2; shift 2
    G="$bin/gpt-generate -m t/data/ref/tiny-gpt-oss --tokens -f $tmp/p.tok -n 12 --eos -1 -q"
    if [ "$g_np" = 1 ]; then $G "$@" >"$g_o.tok" 2>>"$tmp/err"; else run "$g_np" $G "$@" >"$g_o.tok" 2>>"$tmp/err"; fi &&
        "$bin/gpt-tokenize" unpack "$g_o.tok" >"$g_o" 2>>"$tmp/err"
}
gen 1 "$tmp/g1" && gen 2 "$tmp/g2" --pp 2 && [ "$(wc -w <"$tmp/g1")" -eq 39 ] && cmp -s "$tmp/g1" "$tmp/g2"
ok $? "gpt-generate --pp 2: the single-rank greedy tokens (3 prompts, 12 new tokens each)"
gen 4 "$tmp/g4" --pp 2 --tp 2 && cmp -s "$tmp/g1" "$tmp/g4"
ok $? "gpt-generate --tp 2 --pp 2 on 4 ranks: the single-rank greedy tokens"
gen 1 "$tmp/b1" --num-beams 3 && gen 2 "$tmp/b2" --num-beams 3 --pp 2 && cmp -s "$tmp/b1" "$tmp/b2" &&
    gen 1 "$tmp/s1" --temperature 0.8 --seed 7 && gen 2 "$tmp/s2" --temperature 0.8 --seed 7 --pp 2 && cmp -s "$tmp/s1" "$tmp/s2"
ok $? "gpt-generate --pp 2: beam search and seeded sampling as one rank"
grep -v OpenBLAS "$tmp/err" | diag
