#!/bin/sh
# scripts/fetch-tokenizers offline: a fake curl/wget on PATH serves the shared copies of the official
# files, so the sha256 checks, the atomic install and the failure paths run without a network.
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${GPT_SHARED:-../shared}
src=$shared/tokenizers
fetch=$root/scripts/fetch-tokenizers

n=0
fails=0
ok() { # cond-status description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}

for f in o200k_base.tiktoken cl100k_base.tiktoken r50k_base.tiktoken vocab.bpe encoder.json; do
    [ -r "$src/$f" ] || { echo "1..0 # SKIP $src/$f not found (set GPT_SHARED)"; exit 0; }
done
command -v sha256sum >/dev/null 2>&1 || { echo "1..0 # SKIP sha256sum not installed"; exit 0; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-tokenizers-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
src=$(cd "$src" && pwd)
mkdir "$tmp/fake"

# The fake downloader: takes the URL (last argument) and -o/-O FILE; FAKE_MODE picks the behaviour.
cat >"$tmp/fake/curl" <<'EOF'
#!/bin/sh
out=""
prev=""
for a in "$@"; do
    case "$prev" in -o|-O) out=$a ;; esac
    prev=$a
    url=$a
done
echo "$url" >>"$FAKE_LOG"
case "${FAKE_MODE:-ok}" in
    unreachable)
        echo "curl: (6) Could not resolve host: openaipublic.blob.core.windows.net" >&2
        [ "${0##*/}" = wget ] && exit 4
        exit 6 ;;
    notfound)
        echo "curl: (22) The requested URL returned error: 404" >&2
        [ "${0##*/}" = wget ] && exit 8
        exit 22 ;;
esac
cp "$FAKE_SRC/${url##*/}" "$out" || exit 22
[ "${FAKE_MODE:-ok}" = corrupt ] && printf 'x' >>"$out"
exit 0
EOF
chmod +x "$tmp/fake/curl"
cp "$tmp/fake/curl" "$tmp/fake/wget"

run() { # dir files... ; sets rc, out, err
    PATH="$tmp/fake:$PATH" FAKE_SRC=$src FAKE_LOG=$tmp/log "$fetch" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
}
tempfiles() { find "$1" -name '.*' -type f | wc -l; }

echo "1..30"

# 1. The four files whose shared copies are byte-identical to the official ones.
good="o200k_base.tiktoken cl100k_base.tiktoken r50k_base.tiktoken vocab.bpe"
: >"$tmp/log"
# shellcheck disable=SC2086
run "$tmp/d1" $good
ok $rc "official files with matching sha256: exit 0"
for f in $good; do
    cmp -s "$src/$f" "$tmp/d1/$f"
    ok $? "$f installed, identical to the served file"
done
ok "$(tempfiles "$tmp/d1")" "no temporary files left behind"
grep -qx 'https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken' "$tmp/log"
ok $? "o200k_base.tiktoken fetched from the official URL"
grep -qx 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe' "$tmp/log"
ok $? "vocab.bpe fetched from the official URL"

# 2. Files already present and verified are not downloaded again.
: >"$tmp/log"
# shellcheck disable=SC2086
run "$tmp/d1" $good
[ $rc -eq 0 ] && [ ! -s "$tmp/log" ]
ok $? "second run: exit 0 without downloading"

# 3. Bad hash from the server: the shared encoder.json is a pretty-printed copy whose sha256 is not
#    the official one, which is exactly a tampered download.
: >"$tmp/log"
run "$tmp/d2" encoder.json
[ $rc -ne 0 ]
ok $? "encoder.json with a different sha256: non-zero exit ($rc)"
[ ! -e "$tmp/d2/encoder.json" ]
ok $? "rejected encoder.json not installed"
ok "$(tempfiles "$tmp/d2")" "no temporary file left after a bad hash"
grep -q 'sha256 mismatch' "$tmp/err"
ok $? "message says sha256 mismatch"

# 4. A corrupted download (one byte appended) of a file that otherwise verifies.
FAKE_MODE=corrupt run "$tmp/d3" r50k_base.tiktoken
[ $rc -ne 0 ] && [ ! -e "$tmp/d3/r50k_base.tiktoken" ]
ok $? "corrupted r50k_base.tiktoken: non-zero exit, nothing installed"
ok "$(tempfiles "$tmp/d3")" "no temporary file left after corruption"

# 5. A bad file already in place is replaced only by a verified download; a bad download leaves it.
mkdir -p "$tmp/d4" && echo stale >"$tmp/d4/r50k_base.tiktoken"
FAKE_MODE=corrupt run "$tmp/d4" r50k_base.tiktoken
[ $rc -ne 0 ] && [ "$(cat "$tmp/d4/r50k_base.tiktoken")" = stale ]
ok $? "failed re-download leaves the existing file untouched"
run "$tmp/d4" r50k_base.tiktoken
[ $rc -eq 0 ] && cmp -s "$src/r50k_base.tiktoken" "$tmp/d4/r50k_base.tiktoken"
ok $? "a verified download replaces a file with the wrong sha256"

# 6. Mixed: good and bad in one run -> the good ones land, exit is non-zero.
run "$tmp/d5" r50k_base.tiktoken encoder.json
[ $rc -ne 0 ] && [ -f "$tmp/d5/r50k_base.tiktoken" ] && [ ! -e "$tmp/d5/encoder.json" ]
ok $? "one bad file: others still installed, exit non-zero"

# 7. Network unreachable: clear message, stops at the first file, nothing written.
: >"$tmp/log"
FAKE_MODE=unreachable run "$tmp/d6"
[ $rc -ne 0 ]
ok $? "unreachable host: non-zero exit"
grep -q 'cannot reach openaipublic.blob.core.windows.net' "$tmp/err" && grep -q 'network' "$tmp/err"
ok $? "message explains the network is unreachable"
grep -q 'sha256 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d' "$tmp/err"
ok $? "message lists the files and hashes for a manual copy"
[ "$(wc -l <"$tmp/log")" -eq 1 ]
ok $? "stops after the first unreachable download"
[ -z "$(ls -A "$tmp/d6")" ]
ok $? "nothing left in DIR"

# 8. An HTTP error is per file, not fatal to the run.
: >"$tmp/log"
FAKE_MODE=notfound run "$tmp/d7" r50k_base.tiktoken vocab.bpe
[ $rc -ne 0 ] && [ "$(wc -l <"$tmp/log")" -eq 2 ] && [ -z "$(ls -A "$tmp/d7")" ]
ok $? "HTTP errors: each file tried, non-zero exit, nothing installed"

# 9. wget works the same way.
GPT_FETCH=wget run "$tmp/d8" vocab.bpe
[ $rc -eq 0 ] && cmp -s "$src/vocab.bpe" "$tmp/d8/vocab.bpe"
ok $? "GPT_FETCH=wget: verified download"

# 10. Default directory: first entry of GPT_TOKENIZER_PATH, else ~/.local/share/gpt/tokenizers.
PATH="$tmp/fake:$PATH" FAKE_SRC=$src FAKE_LOG=$tmp/log GPT_TOKENIZER_PATH="$tmp/p1:$tmp/p2" \
    "$fetch" >"$tmp/out" 2>"$tmp/err"
[ -f "$tmp/p1/o200k_base.tiktoken" ] && [ ! -e "$tmp/p2" ]
ok $? "default DIR is the first GPT_TOKENIZER_PATH entry"
(unset GPT_TOKENIZER_PATH XDG_DATA_HOME
 PATH="$tmp/fake:$PATH" FAKE_SRC=$src FAKE_LOG=$tmp/log HOME=$tmp/home \
     "$fetch" >"$tmp/out" 2>"$tmp/err")
[ -f "$tmp/home/.local/share/gpt/tokenizers/cl100k_base.tiktoken" ]
ok $? "default DIR without GPT_TOKENIZER_PATH is ~/.local/share/gpt/tokenizers"
grep -q "export GPT_TOKENIZER_PATH=$tmp/home/.local/share/gpt/tokenizers" "$tmp/out"
ok $? "says how to point GPT_TOKENIZER_PATH at it"

# 11. Usage errors exit 2.
run "$tmp/d9" no-such-file.bin
[ $rc -eq 2 ]
ok $? "unknown FILE name: exit 2"
run --bogus
[ $rc -eq 2 ]
ok $? "unknown option: exit 2"

[ $fails -eq 0 ]
