#!/bin/sh
# gpt-tokenize train: the rank file it writes, its errors and notes, determinism across thread
# counts, and (when available) that Python tiktoken reads the file and encodes like we do.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
shared=${GPT_SHARED:-$root/../shared}
tok=$bin/gpt-tokenize

[ -x "$tok" ] || { echo "1..0 # SKIP $tok not built"; exit 0; }

n=0
fails=0
ok() { # status description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bpe-train-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# A small corpus with plenty of repeated pairs (rank files are compared, never hard-coded).
i=0
: >"$tmp/a.txt"
while [ $i -lt 200 ]; do
    echo "the quick brown fox $i jumps over the lazy dog; naïve café $((i * 7 % 13))" >>"$tmp/a.txt"
    i=$((i + 1))
done
printf 'another file, other words: the fox, the dog.\n' >"$tmp/b.txt"

"$tok" train --vocab-size 300 -o "$tmp/v.tiktoken" "$tmp/a.txt" "$tmp/b.txt" 2>"$tmp/err"
ok $? "train -o exits 0"
ok "$([ "$(wc -l <"$tmp/v.tiktoken")" -eq 300 ] && echo 0 || echo 1)" "300 lines for --vocab-size 300"
# Every line is "BASE64 RANK" with ranks 0..N-1 in order; the first 256 are the single bytes.
awk '$2 != NR - 1 || NF != 2 || $1 !~ /^[A-Za-z0-9+\/]+=*$/ { bad = 1 } END { exit bad }' \
    "$tmp/v.tiktoken"
ok $? "lines are 'BASE64 RANK', ranks dense from 0"
ok "$(head -n 256 "$tmp/v.tiktoken" | while read -r b r; do
    printf '%s' "$b" | base64 -d | od -An -tu1 | tr -d ' \n'
    echo " $r"
done | awk '$1 == $2 { good++ } END { print good == 256 ? 0 : 1 }')" "ranks 0..255 are the bytes 0..255"
ls "$tmp" | grep -q '\.tmp\.' && r=1 || r=0
ok $r "no temp file left beside the output"

"$tok" train --vocab-size 300 "$tmp/a.txt" "$tmp/b.txt" >"$tmp/stdout.tiktoken" 2>/dev/null
cmp -s "$tmp/v.tiktoken" "$tmp/stdout.tiktoken"
ok $? "without -o the same file goes to stdout"
"$tok" train -t 1 --vocab-size 300 -o "$tmp/t1.tiktoken" "$tmp/a.txt" "$tmp/b.txt" 2>/dev/null &&
    "$tok" train -t 2 --vocab-size 300 -o "$tmp/t2.tiktoken" "$tmp/a.txt" "$tmp/b.txt" 2>/dev/null &&
    cmp -s "$tmp/t1.tiktoken" "$tmp/t2.tiktoken" && cmp -s "$tmp/t1.tiktoken" "$tmp/v.tiktoken"
ok $? "-t 1 and -t 2 give identical files"
"$tok" train --pattern r50k --vocab-size 300 -o "$tmp/r50k.tiktoken" "$tmp/a.txt" "$tmp/b.txt" 2>/dev/null
ok $? "--pattern r50k trains"

# Running out of pairs is a note, not an error.
printf 'abc abd\n' >"$tmp/tiny.txt"
"$tok" train --vocab-size 5000 -o "$tmp/tiny.tiktoken" "$tmp/tiny.txt" 2>"$tmp/err"
r=$?
lines=$(wc -l <"$tmp/tiny.tiktoken")
ok "$([ $r -eq 0 ] && [ "$lines" -gt 256 ] && [ "$lines" -lt 5000 ] && [ -s "$tmp/err" ] && echo 0 || echo 1)" \
    "a tiny text stops early ($lines tokens) with a note on stderr"

# Errors: exit non-zero with a message, and never leave an output file.
"$tok" train --vocab-size 100 -o "$tmp/bad.tiktoken" "$tmp/a.txt" 2>"$tmp/err"
r=$?
ok "$([ $r -ne 0 ] && grep -q 256 "$tmp/err" && [ ! -e "$tmp/bad.tiktoken" ] && echo 0 || echo 1)" \
    "--vocab-size 100 is an error naming the minimum 256"
: >"$tmp/empty.txt"
"$tok" train --vocab-size 300 -o "$tmp/bad.tiktoken" "$tmp/empty.txt" 2>"$tmp/err"
r=$?
ok "$([ $r -ne 0 ] && [ -s "$tmp/err" ] && [ ! -e "$tmp/bad.tiktoken" ] && echo 0 || echo 1)" "empty input is an error"
"$tok" train --vocab-size 300 -o "$tmp/bad.tiktoken" "$tmp/no-such-file" 2>"$tmp/err"
r=$?
ok "$([ $r -ne 0 ] && grep -q no-such-file "$tmp/err" && echo 0 || echo 1)" "a missing input is named"
"$tok" train --vocab-size 300 --pattern '([a-z' -o "$tmp/bad.tiktoken" "$tmp/a.txt" 2>"$tmp/err"
r=$?
ok "$([ $r -ne 0 ] && [ -s "$tmp/err" ] && [ ! -e "$tmp/bad.tiktoken" ] && echo 0 || echo 1)" "a bad --pattern is an error"

# The trained file works as an encoding: decode(encode(x)) == x.
"$tok" encode -e "$tmp/v.tiktoken" --format ids "$tmp/a.txt" >"$tmp/ids" 2>/dev/null &&
    "$tok" decode -e "$tmp/v.tiktoken" --format ids "$tmp/ids" >"$tmp/back" 2>/dev/null &&
    cmp -s "$tmp/back" "$tmp/a.txt"
ok $? "encode/decode with the trained file round-trips"

# Python tiktoken as an independent reader and encoder.
if python3 -c 'import tiktoken' 2>/dev/null; then
    python3 - "$tmp/v.tiktoken" "$tmp/a.txt" >"$tmp/py_ids" 2>"$tmp/py_err" <<'EOF'
import sys, tiktoken
from tiktoken.load import load_tiktoken_bpe
r = load_tiktoken_bpe(sys.argv[1])
assert sorted(r.values()) == list(range(300)), "ranks"
pat = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""])
e = tiktoken.Encoding("trained", pat_str=pat, mergeable_ranks=r, special_tokens={})
d = open(sys.argv[2], "rb").read()
ids = e.encode(d.decode("utf-8"), disallowed_special=())
assert e.decode_bytes(ids) == d
print(" ".join(map(str, ids)))
EOF
    ok $? "python tiktoken loads the file and round-trips the text"
    tr -s ' \n' '  ' <"$tmp/ids" | sed 's/ *$//' >"$tmp/ids1"
    tr -s ' \n' '  ' <"$tmp/py_ids" | sed 's/ *$//' >"$tmp/ids2"
    cmp -s "$tmp/ids1" "$tmp/ids2"
    ok $? "gpt-tokenize encode and tiktoken give the same ids with the trained file"
else
    skip "python3 with tiktoken not available"
    skip "python3 with tiktoken not available"
fi

corpus=$shared/corpus/tinyshakespeare.txt
if [ -r "$corpus" ]; then
    "$tok" train --vocab-size 1024 -o "$tmp/s.tiktoken" "$corpus" 2>/dev/null
    ok $? "trains vocab 1024 on tinyshakespeare"
    count=$("$tok" count -e "$tmp/s.tiktoken" "$corpus" 2>/dev/null | cut -f1)
    bytes=$(wc -c <"$corpus")
    ok "$([ -n "$count" ] && [ "$count" -lt $((bytes / 2)) ] && echo 0 || echo 1)" \
        "tinyshakespeare: $count tokens < $bytes bytes / 2"
else
    skip "$corpus not found (set GPT_SHARED)"
    skip "$corpus not found (set GPT_SHARED)"
fi

echo "1..$n"
[ $fails -eq 0 ]
