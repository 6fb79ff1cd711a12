#!/bin/sh
# tokenizer-cli.t: the gpt-tokenize command-line contract (usage, exit status, error messages,
# pipes, stream format round trips, special tokens, count/info) and a random-bytes round trip.
set -u

SHARED=${GPT_SHARED:-../shared}
TOKDIR=$SHARED/tokenizers
BIN=${GPT_BIN:-$(pwd)/bin}
TOK=$BIN/gpt-tokenize
D=t/data/tok
ENCODINGS="o200k_base cl100k_base r50k_base"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokcli.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

n=0
failed=0
ok() { # ok COND-STATUS NAME
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else failed=$((failed + 1)); echo "not ok $n - $2"; fi
    return "$1"
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
diag() { sed 's/^/# /' "$@"; }
finish() { echo "1..$n"; [ "$failed" -eq 0 ]; exit $?; }

if [ ! -x "$TOK" ]; then
    echo "1..1"
    echo "not ok 1 - $TOK exists"
    exit 1
fi

# ---- usage: no vocabulary needed
"$TOK" --help >"$tmp/out" 2>"$tmp/err"
ok $? "--help exits 0" || diag "$tmp/err"
grep -q encode "$tmp/out" && grep -q decode "$tmp/out"
ok $? "--help prints the commands on stdout" || diag "$tmp/out"

"$TOK" --version >"$tmp/out" 2>"$tmp/err"
ok $? "--version exits 0" || diag "$tmp/err"
grep -Eq '[0-9]+\.[0-9]+' "$tmp/out"
ok $? "--version prints a version on stdout" || diag "$tmp/out"

"$TOK" --no-such-option >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 2 ] && [ -s "$tmp/err" ]
ok $? "unknown global option exits 2 with a message (exit $rc)"

"$TOK" encode --no-such-option </dev/null >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 2 ] && [ -s "$tmp/err" ]
ok $? "unknown encode option exits 2 with a message (exit $rc)"

"$TOK" frobnicate </dev/null >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 2 ]
ok $? "unknown command exits 2 (exit $rc)"

"$TOK" encode -t notanumber -e r50k_base </dev/null >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 2 ]
ok $? "a non-numeric --threads exits 2 (exit $rc)"

echo hi | "$TOK" encode -e no_such_encoding >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && grep -q no_such_encoding "$tmp/err"
ok $? "unknown encoding: an error naming it (exit $rc)" || diag "$tmp/err"

# ---- missing vocabulary: the message says where it looked and how to get the files
mkdir "$tmp/empty"
echo hi | GPT_TOKENIZER_PATH=$tmp/empty "$TOK" encode -e cl100k_base >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 1 ] && grep -q "$tmp/empty" "$tmp/err" && grep -q 'scripts/fetch-tokenizers' "$tmp/err"
ok $? "missing vocab: exit 1 naming the searched directory and scripts/fetch-tokenizers (exit $rc)" ||
    diag "$tmp/err"

echo hi | "$TOK" encode -e cl100k_base --vocab "$tmp/empty/nope.tiktoken" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 1 ] && grep -q "$tmp/empty/nope.tiktoken" "$tmp/err"
ok $? "missing --vocab file: exit 1 naming the file (exit $rc)" || diag "$tmp/err"

"$TOK" encode -e cl100k_base --vocab "$TOKDIR/cl100k_base.tiktoken" "$tmp/empty/nofile.txt" \
    >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 1 ] && grep -q "nofile.txt" "$tmp/err"
ok $? "missing input file: exit 1 naming the file (exit $rc)" || diag "$tmp/err"

for e in $ENCODINGS; do
    if [ ! -r "$TOKDIR/$e.tiktoken" ]; then
        skip "the rest needs $TOKDIR/$e.tiktoken (set GPT_SHARED, or run scripts/fetch-tokenizers)"
        finish
    fi
done
GPT_TOKENIZER_PATH=$TOKDIR
export GPT_TOKENIZER_PATH

corpus=$SHARED/corpus/tinyshakespeare.txt
if [ -r "$corpus" ]; then
    head -c 200000 "$corpus" >"$tmp/text"
else
    cat "$D"/cases/*.in >"$tmp/text"
fi
printf 'second file\n\n' >"$tmp/text2"

# ---- pipes and the token stream
for e in $ENCODINGS; do
    "$TOK" encode -e "$e" --no-eot <"$tmp/text" | "$TOK" decode -e "$e" >"$tmp/out" 2>"$tmp/err"
    cmp -s "$tmp/out" "$tmp/text"
    ok $? "$e: encode --no-eot | decode gives the input" || diag "$tmp/err"

    "$TOK" encode -e "$e" --format ids - <"$tmp/text" >"$tmp/ids" 2>"$tmp/err"
    ok $? "$e: encode --format ids from stdin" || diag "$tmp/err"
    "$TOK" decode -e "$e" --format ids <"$tmp/ids" >"$tmp/out" 2>"$tmp/err"
    cmp -s "$tmp/out" "$tmp/text"
    ok $? "$e: decode --format ids gives the input" || diag "$tmp/err"

    [ "$(wc -l <"$tmp/ids")" -eq 1 ] && [ "$(tail -c 1 "$tmp/ids" | od -An -c | tr -d ' ')" = '\n' ] &&
        ! grep -q '  ' "$tmp/ids" && ! grep -q '^ ' "$tmp/ids" && ! grep -q ' $' "$tmp/ids"
    ok $? "$e: --format ids is one line of single-space-separated ids with a trailing newline"

    "$TOK" encode -e "$e" --no-eot "$tmp/text" >"$tmp/stream" 2>"$tmp/err" &&
        "$TOK" unpack "$tmp/stream" >"$tmp/unpacked" 2>>"$tmp/err"
    cmp -s "$tmp/unpacked" "$tmp/ids"
    ok $? "$e: unpack of the --no-eot stream equals --format ids" || diag "$tmp/err"

    "$TOK" encode -e "$e" "$tmp/text" "$tmp/text2" >"$tmp/stream2" 2>"$tmp/err"
    "$TOK" encode -e "$e" --format ids "$tmp/text" "$tmp/text2" >"$tmp/ids2" 2>>"$tmp/err"
    eot=$(printf '<|endoftext|>' | "$TOK" encode -e "$e" --special all --format ids 2>>"$tmp/err")
    l1=$(sed -n 1p "$tmp/ids2")
    l2=$(sed -n 2p "$tmp/ids2")
    printf '%s %s %s %s\n' "$l1" "$eot" "$l2" "$eot" >"$tmp/want"
    "$TOK" unpack "$tmp/stream2" >"$tmp/unpacked" 2>>"$tmp/err"
    [ "$(wc -l <"$tmp/ids2")" -eq 2 ] && cmp -s "$tmp/unpacked" "$tmp/want"
    ok $? "$e: two files: ids lines per file; the stream has <|endoftext|> after each" ||
        { diag "$tmp/err"; head -c 300 "$tmp/unpacked" | diag; }

    "$TOK" encode -e "$e" --no-eot -o "$tmp/outfile" "$tmp/text" 2>"$tmp/err"
    cmp -s "$tmp/outfile" "$tmp/stream"
    ok $? "$e: -o writes the same stream as stdout" || diag "$tmp/err"

    "$TOK" pack -e "$e" "$tmp/ids" >"$tmp/packed" 2>"$tmp/err" &&
        "$TOK" unpack "$tmp/packed" >"$tmp/unpacked" 2>>"$tmp/err"
    cmp -s "$tmp/unpacked" "$tmp/ids"
    ok $? "$e: pack | unpack round trip" || diag "$tmp/err"
    "$TOK" decode -e "$e" "$tmp/packed" >"$tmp/out" 2>"$tmp/err"
    cmp -s "$tmp/out" "$tmp/text"
    ok $? "$e: decode of a packed stream gives the input" || diag "$tmp/err"
done

# --vocab-size instead of an encoding; zstd streams.
tr ' ' '\n' <"$tmp/ids" | tr '\n' ' ' >"$tmp/ids-ws"
printf '\n\t7 8\n' >>"$tmp/ids-ws"
"$TOK" pack --vocab-size 50257 "$tmp/ids-ws" >"$tmp/packed" 2>"$tmp/err" &&
    "$TOK" unpack "$tmp/packed" >"$tmp/unpacked" 2>>"$tmp/err"
printf '%s 7 8\n' "$(tr -d '\n' <"$tmp/ids")" >"$tmp/want"
cmp -s "$tmp/unpacked" "$tmp/want"
ok $? "pack --vocab-size accepts any whitespace between ids; unpack normalizes" || diag "$tmp/err"

"$TOK" encode -e r50k_base --no-eot --compress zstd "$tmp/text" >"$tmp/z" 2>"$tmp/err" &&
    "$TOK" unpack "$tmp/z" >"$tmp/unpacked" 2>>"$tmp/err" &&
    "$TOK" decode -e r50k_base "$tmp/z" >"$tmp/out" 2>>"$tmp/err"
cmp -s "$tmp/unpacked" "$tmp/ids" && cmp -s "$tmp/out" "$tmp/text" &&
    [ "$(wc -c <"$tmp/z")" -lt "$(wc -c <"$tmp/stream")" ]
ok $? "--compress zstd: smaller, unpacks and decodes to the same" || diag "$tmp/err"

# ---- out-of-range ids: an error naming the id and its position
printf '1 2 50257 3\n' >"$tmp/bad"
"$TOK" decode -e r50k_base --format ids "$tmp/bad" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && grep -q 50257 "$tmp/err" && grep -Eqi '(position|index|token|offset)[^0-9]*[23]\b' "$tmp/err"
ok $? "decode: out-of-range id is an error naming the id and its position (exit $rc)" || diag "$tmp/err"

"$TOK" pack -e r50k_base "$tmp/bad" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && grep -q 50257 "$tmp/err" && grep -Eqi '(position|index|token|offset)[^0-9]*[23]\b' "$tmp/err"
ok $? "pack: out-of-range id is an error naming the id and its position (exit $rc)" || diag "$tmp/err"

printf '1 2 x3 4\n' >"$tmp/bad"
"$TOK" pack -e r50k_base "$tmp/bad" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && [ -s "$tmp/err" ]
ok $? "pack: a non-numeric id is an error (exit $rc)" || diag "$tmp/err"

printf 'this is not a token stream at all' >"$tmp/bad"
"$TOK" unpack "$tmp/bad" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && grep -q "$tmp/bad" "$tmp/err"
ok $? "unpack: a non-stream file is an error naming the file (exit $rc)" || diag "$tmp/err"

# ---- special tokens (expected ids from tiktoken, t/data/tok)
for e in o200k_base cl100k_base r50k_base o200k_harmony; do
    exp=$D/expect/$e
    f=$D/special/eot-alone.in
    "$TOK" encode -e "$e" --special all --format ids "$f" >"$tmp/out" 2>"$tmp/err"
    cmp -s "$tmp/out" "$exp/eot-alone.all.ids"
    ok $? "$e: --special all encodes <|endoftext|> as its special id" || diag "$tmp/err"
    "$TOK" encode -e "$e" --special none --format ids "$f" >"$tmp/out" 2>"$tmp/err"
    cmp -s "$tmp/out" "$exp/eot-alone.ids" && [ "$(wc -w <"$tmp/out")" -gt 1 ]
    ok $? "$e: --special none encodes <|endoftext|> as text" || diag "$tmp/err"
    "$TOK" encode -e "$e" --format ids "$f" >"$tmp/out" 2>"$tmp/err"
    cmp -s "$tmp/out" "$exp/eot-alone.ids"
    ok $? "$e: the default is --special none" || diag "$tmp/err"
done
"$TOK" encode -e o200k_harmony --special '<|start|>,message' --format ids \
    "$D/special/harmony-chat.in" >"$tmp/out" 2>"$tmp/err"
rc=$?
tr ' ' '\n' <"$tmp/out" | grep -Ex '200006|200008' | sort -u | tr '\n' ' ' >"$tmp/got"
[ "$rc" -eq 0 ] && [ "$(cat "$tmp/got")" = "200006 200008 " ] && ! grep -qw 200007 "$tmp/out"
ok $? "--special LIST allows exactly the listed tokens (texts or names)" || diag "$tmp/err"

"$TOK" encode -e r50k_base --special '<|no_such|>' --format ids "$f" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && grep -q 'no_such' "$tmp/err"
ok $? "--special with an unknown token is an error naming it (exit $rc)" || diag "$tmp/err"

# ---- count and info
"$TOK" encode -e cl100k_base --format ids "$tmp/text" "$tmp/text2" >"$tmp/ids2"
c1=$(sed -n 1p "$tmp/ids2" | wc -w | tr -d ' ')
c2=$(sed -n 2p "$tmp/ids2" | wc -w | tr -d ' ')
"$TOK" count -e cl100k_base "$tmp/text" >"$tmp/out" 2>"$tmp/err"
printf '%s\t%s\n' "$c1" "$tmp/text" >"$tmp/want"
cmp -s "$tmp/out" "$tmp/want"
ok $? "count: one file prints N<TAB>FILE" || { diag "$tmp/err"; diag "$tmp/out"; }
"$TOK" count -e cl100k_base "$tmp/text" "$tmp/text2" >"$tmp/out" 2>"$tmp/err"
head -n 2 "$tmp/out" >"$tmp/got"
printf '%s\t%s\n%s\t%s\n' "$c1" "$tmp/text" "$c2" "$tmp/text2" >"$tmp/want"
[ "$(wc -l <"$tmp/out")" -eq 3 ] && cmp -s "$tmp/got" "$tmp/want" &&
    [ "$(sed -n 3p "$tmp/out" | cut -f 1)" -eq $((c1 + c2)) ] &&
    sed -n 3p "$tmp/out" | grep -qi total
ok $? "count: several files print a line each and a total" || diag "$tmp/out"

# n_vocab and the <|endoftext|> id as tiktoken has them (t/data/tok/expect/ENC/info.txt).
for e in o200k_harmony o200k_base cl100k_base r50k_base gpt2; do
    info=$D/expect/$e/info.txt
    [ "$e" = gpt2 ] && info=$D/expect/r50k_base/info.txt
    nv=$(sed -n 's/^n_vocab //p' "$info")
    eot=$(sed -n 's/^eot //p' "$info")
    "$TOK" info -e "$e" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ "$rc" -eq 0 ] && grep -qw "$nv" "$tmp/out" && grep '<|endoftext|>' "$tmp/out" | grep -qw "$eot"
    ok $? "info -e $e: n_vocab $nv and <|endoftext|> = $eot" || { diag "$tmp/err"; head -n 20 "$tmp/out" | diag; }
done
"$TOK" info -e o200k_harmony >"$tmp/out"
grep '<|start|>' "$tmp/out" | grep -qw 200006 && grep '<|call|>' "$tmp/out" | grep -qw 200012
ok $? "info -e o200k_harmony lists the harmony tokens with their ids"

"$TOK" encode -e cl100k_base "$tmp/text" "$tmp/text2" >"$tmp/stream2"
"$TOK" info "$tmp/stream2" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 0 ] && grep -qw $((c1 + c2 + 2)) "$tmp/out" && grep -qw 2 "$tmp/out" &&
    grep -qi 'checksum' "$tmp/out"
ok $? "info FILE: reports the token count ($((c1 + c2 + 2))), 2 documents and the checksum" ||
    { diag "$tmp/err"; diag "$tmp/out"; }

# A flipped byte in the middle of a stream must not go unnoticed.
size=$(wc -c <"$tmp/stream2")
cp "$tmp/stream2" "$tmp/corrupt"
printf '\377' | dd of="$tmp/corrupt" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
if cmp -s "$tmp/corrupt" "$tmp/stream2"; then
    printf '\376' | dd of="$tmp/corrupt" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
fi
"$TOK" decode -e cl100k_base "$tmp/corrupt" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && [ -s "$tmp/err" ]
ok $? "decode of a corrupted stream fails with a message (exit $rc)" || diag "$tmp/err"

# ---- property: random byte strings round-trip, each file encoded on its own
i=0
: >"$tmp/all"
while [ $i -lt 200 ]; do
    len=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    len=$((len % 3000))
    head -c "$len" /dev/urandom >"$tmp/r$i"
    cat "$tmp/r$i" >>"$tmp/all"
    i=$((i + 1))
done
files=$(i=0; while [ $i -lt 200 ]; do printf '%s ' "$tmp/r$i"; i=$((i + 1)); done)
for e in $ENCODINGS; do
    # shellcheck disable=SC2086
    "$TOK" encode -e "$e" --no-eot $files 2>"$tmp/err" | "$TOK" decode -e "$e" >"$tmp/out" 2>>"$tmp/err"
    if cmp -s "$tmp/out" "$tmp/all"; then
        ok 0 "$e: 200 random byte strings round-trip encode | decode"
    else
        ok 1 "$e: 200 random byte strings round-trip encode | decode"
        diag "$tmp/err"
        for f in $files; do
            "$TOK" encode -e "$e" --format ids "$f" | "$TOK" decode -e "$e" --format ids >"$tmp/one"
            cmp -s "$tmp/one" "$f" || { echo "# differs: $(od -An -tx1 "$f" | head -n 4 | tr -d '\n')"; break; }
        done
    fi
done

# ---- a 1 MiB run of one character must not be quadratic (generous limit, not a speed test)
for unit in 61 20 0a 21 ff; do
    perl -e 'print pack("H*", $ARGV[0]) x 1048576' "$unit" >"$tmp/run"
    for e in $ENCODINGS; do
        timeout 60 "$TOK" encode -e "$e" --no-eot "$tmp/run" >"$tmp/stream" 2>"$tmp/err" &&
            "$TOK" decode -e "$e" "$tmp/stream" >"$tmp/out" 2>>"$tmp/err" && cmp -s "$tmp/out" "$tmp/run"
        ok $? "$e: 1 MiB of byte 0x$unit encodes within 60 s and round-trips" || diag "$tmp/err"
    done
done

finish
