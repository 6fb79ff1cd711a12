#!/bin/sh
# tokenizer-fixtures.t: gpt-tokenize is byte-exact with tiktoken on hard strings, invalid UTF-8,
# special tokens and the shared corpus (single- and multi-threaded), and decode gives back the
# exact input bytes. Expected ids come from tiktoken via scripts/make-tokenizer-fixtures.py.
set -u

SHARED=${GPT_SHARED:-../shared}
TOKDIR=$SHARED/tokenizers
BIN=${GPT_BIN:-$(pwd)/bin}
TOK=$BIN/gpt-tokenize
D=t/data/tok
ENCODINGS="o200k_base cl100k_base r50k_base"

for e in $ENCODINGS; do
    if [ ! -r "$TOKDIR/$e.tiktoken" ]; then
        echo "1..0 # SKIP $TOKDIR/$e.tiktoken is absent (set GPT_SHARED, or run scripts/fetch-tokenizers)"
        exit 0
    fi
done
if [ ! -d "$D/cases" ]; then
    echo "1..0 # SKIP $D is absent (run scripts/make-tokenizer-fixtures.py)"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokfix.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

n=0
failed=0
pass() { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
diag() { sed 's/^/# /' "$@"; }

vocab_of() { # encoding -> rank file
    case $1 in
        o200k_harmony) echo "$TOKDIR/o200k_base.tiktoken" ;;
        *) echo "$TOKDIR/$1.tiktoken" ;;
    esac
}

# Prints where two ids texts first differ: the token index, both ids, and the input byte offset
# of that token (the decoded length of the expected prefix).
first_diff() { # got want encoding
    tr ' ' '\n' <"$1" >"$tmp/g.l"
    tr ' ' '\n' <"$2" >"$tmp/w.l"
    paste "$tmp/g.l" "$tmp/w.l" | awk -F '\t' '
        $1 != $2 { printf "%d %s %s\n", NR - 1, ($1 == "" ? "(end)" : $1), ($2 == "" ? "(end)" : $2); exit }
    ' >"$tmp/d"
    if [ -s "$tmp/d" ]; then
        read -r fd_k fd_g fd_w <"$tmp/d"
        fd_off=$(head -n "$fd_k" "$tmp/w.l" | tr '\n' ' ' |
              "$TOK" decode -e "$3" --vocab "$(vocab_of "$3")" --format ids 2>/dev/null | wc -c)
        echo "# first difference at token $fd_k (input byte $fd_off): got $fd_g, want $fd_w"
    else
        echo "# texts differ only in whitespace/format"
        od -c "$1" | head -n 3 | diag
    fi
}

# check LABEL ENC GOT EXPECT_BASE: compares GOT with EXPECT_BASE.ids, or with EXPECT_BASE.sum
# (count and sha256) and EXPECT_BASE.head.ids for locating a difference.
check() {
    ck_label=$1 ck_enc=$2 ck_got=$3 ck_base=$4
    if [ -f "$ck_base.ids" ]; then
        if cmp -s "$ck_got" "$ck_base.ids"; then
            pass "$ck_label"
        else
            fail "$ck_label"
            first_diff "$ck_got" "$ck_base.ids" "$ck_enc"
        fi
    else
        ck_want=$(cat "$ck_base.sum")
        ck_have="$(wc -w <"$ck_got" | tr -d ' ') $(sha256sum <"$ck_got" | cut -d ' ' -f 1)"
        if [ "$ck_have" = "$ck_want" ]; then
            pass "$ck_label"
        else
            fail "$ck_label"
            echo "# got count+sha256 $ck_have"
            echo "# want            $ck_want"
            ck_cnt=$(wc -w <"$ck_base.head.ids")
            tr ' ' '\n' <"$ck_got" | head -n "$ck_cnt" | tr '\n' ' ' | sed 's/ $//' >"$tmp/gh"
            echo >>"$tmp/gh"
            if cmp -s "$tmp/gh" "$ck_base.head.ids"; then
                echo "# the first $ck_cnt ids agree"
            else
                first_diff "$tmp/gh" "$ck_base.head.ids" "$ck_enc"
            fi
        fi
    fi
}

# input_of NAME DIR: path of the case's input bytes (expanding a .rep file into $tmp).
input_of() {
    if [ -f "$2/$1.in" ]; then
        echo "$2/$1.in"
    else
        read -r count hex <"$2/$1.rep"
        perl -e 'print pack("H*", $ARGV[1]) x $ARGV[0]' "$count" "$hex" >"$tmp/$1.in"
        echo "$tmp/$1.in"
    fi
}

# run_case LABEL ENC INPUT EXPECT_BASE [ENCODE OPTIONS...]: encode, compare, and decode both
# the expected ids (when stored in full) and our own ids back to the input bytes.
run_case() {
    rc_label=$1 rc_enc=$2 rc_in=$3 rc_base=$4
    shift 4
    rc_vocab=$(vocab_of "$rc_enc")
    if "$TOK" encode -e "$rc_enc" --vocab "$rc_vocab" --format ids "$@" "$rc_in" >"$tmp/got" 2>"$tmp/err"; then
        check "$rc_label: encode" "$rc_enc" "$tmp/got" "$rc_base"
        rc_ids=$tmp/got
        [ -f "$rc_base.ids" ] && rc_ids=$rc_base.ids
        if "$TOK" decode -e "$rc_enc" --vocab "$rc_vocab" --format ids "$rc_ids" >"$tmp/dec" 2>"$tmp/err" &&
            cmp -s "$tmp/dec" "$rc_in"; then
            pass "$rc_label: decode gives the input bytes"
        else
            fail "$rc_label: decode gives the input bytes"
            diag "$tmp/err"
            cmp "$tmp/dec" "$rc_in" 2>&1 | diag
        fi
    else
        fail "$rc_label: encode (exit $?)"
        diag "$tmp/err"
        skip "$rc_label: decode (encode failed)"
    fi
}

if [ ! -x "$TOK" ]; then
    echo "1..1"
    echo "not ok 1 - $TOK exists"
    exit 1
fi

# Hand-made hard cases; the long ones also with 2 threads, which must change nothing.
for enc in $ENCODINGS; do
    for f in "$D"/cases/*.in "$D"/cases/*.rep; do
        [ -e "$f" ] || continue
        name=${f##*/}
        name=${name%.*}
        in=$(input_of "$name" "$D/cases")
        run_case "$enc $name" "$enc" "$in" "$D/expect/$enc/$name" -t 1
        if [ "${f##*.}" = rep ]; then
            run_case "$enc $name -t 2" "$enc" "$in" "$D/expect/$enc/$name" -t 2
        fi
    done
done

# Special tokens: as text by default, and as themselves with --special all.
for enc in $ENCODINGS o200k_harmony; do
    for f in "$D"/special/*.in; do
        name=${f##*/}
        name=${name%.in}
        run_case "$enc special $name (none)" "$enc" "$f" "$D/expect/$enc/$name"
        run_case "$enc special $name --special none" "$enc" "$f" "$D/expect/$enc/$name" --special none
        run_case "$enc special $name --special all" "$enc" "$f" "$D/expect/$enc/$name.all" --special all
    done
done

# The shared corpus, 1 and 2 threads; skipped when the shared copy is not the one the fixtures
# were made from.
while read -r cname csum; do
    corpus=$SHARED/corpus/$cname.txt
    have=$(sha256sum <"$corpus" 2>/dev/null | cut -d ' ' -f 1)
    for enc in $ENCODINGS; do
        for t in 1 2; do
            if [ "$have" = "$csum" ]; then
                run_case "$enc corpus $cname -t $t" "$enc" "$corpus" "$D/expect/$enc/$cname" -t "$t"
            else
                skip "$enc corpus $cname -t $t: $corpus is absent or not the copy the fixtures were made from"
                skip "$enc corpus $cname -t $t: decode"
            fi
        done
    done
done <"$D/corpus.txt"

# Differential: random mixes of the hard cases' bytes and random bytes against tiktoken itself,
# when it is installed (pip install tiktoken).
if python3 -c 'import tiktoken' 2>/dev/null; then
    cat "$D"/cases/*.in >"$tmp/pool"
    poolsize=$(wc -c <"$tmp/pool")
    rnd() { od -An -N4 -tu4 /dev/urandom | tr -d ' '; }
    files=
    i=0
    while [ $i -lt 60 ]; do
        : >"$tmp/mix$i"
        j=0
        while [ $j -lt 6 ]; do
            if [ $(($(rnd) % 3)) -eq 0 ]; then
                head -c $(($(rnd) % 8)) /dev/urandom >>"$tmp/mix$i"
            else
                tail -c +$(($(rnd) % poolsize + 1)) "$tmp/pool" | head -c $(($(rnd) % 60)) >>"$tmp/mix$i"
            fi
            j=$((j + 1))
        done
        files="$files $tmp/mix$i"
        i=$((i + 1))
    done
    for enc in $ENCODINGS; do
        # shellcheck disable=SC2086
        python3 scripts/make-tokenizer-fixtures.py --oracle "$enc" $files >"$tmp/want" 2>"$tmp/err" &&
            "$TOK" encode -e "$enc" --vocab "$(vocab_of "$enc")" --format ids $files >"$tmp/got" 2>>"$tmp/err"
        if cmp -s "$tmp/got" "$tmp/want"; then
            pass "$enc: 60 random mixes of hard cases and bytes agree with tiktoken"
        else
            fail "$enc: 60 random mixes of hard cases and bytes agree with tiktoken"
            diag "$tmp/err"
            k=1
            for f in $files; do
                sed -n "${k}p" "$tmp/got" >"$tmp/g1"
                sed -n "${k}p" "$tmp/want" >"$tmp/w1"
                if ! cmp -s "$tmp/g1" "$tmp/w1"; then
                    echo "# input (hex): $(od -An -tx1 "$f" | tr -d '\n')"
                    first_diff "$tmp/g1" "$tmp/w1" "$enc"
                    break
                fi
                k=$((k + 1))
            done
        fi
    done
else
    skip "random mixes vs tiktoken: python3 -c 'import tiktoken' fails (pip install tiktoken)"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
