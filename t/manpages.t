#!/bin/sh
# The manual pages: each renders without a groff warning, each program has a page, and the pages
# keep up with the programs: every option a program's --help shows is documented in its page, and
# a page says "not implemented yet" exactly when the program does.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
cd "$root" || exit 1

n=0
fails=0
ok() { # status description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

# Page text with the roff escapes that matter for option names removed.
deroff() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\f(..//g' -e 's/\\[&%]//g' "$1"; }
has_word() { # file word: word appears delimited by non-option characters
    deroff "$1" | grep -qE -- "(^|[^A-Za-z0-9_-])$2([^A-Za-z0-9_-]|\$)"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/manpages-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

pages=$(ls man/man[1-8]/*.[1-8] 2>/dev/null)
[ -n "$pages" ] || { echo "1..0 # SKIP no manual pages"; exit 0; }

# 1. Rendering, with every groff warning enabled.
for p in $pages; do
    if ! command -v groff >/dev/null 2>&1; then
        skip "groff not installed: $p"
        continue
    fi
    groff -man -Tutf8 -ww -z "$p" >"$tmp/warn" 2>&1
    st=$?
    [ $st -eq 0 ] && [ ! -s "$tmp/warn" ]
    ok $? "$p renders without warnings"
    [ -s "$tmp/warn" ] && sed 's/^/# /' "$tmp/warn"
    # The page's name and section must match its file name, or man(1) cannot find it.
    base=${p##*/}
    name=${base%.*}
    sec=${base##*.}
    th=$(grep -m1 '^\.TH ' "$p" | awk '{ print tolower($2), $3 }')
    [ "$th" = "$name $sec" ]
    ok $? "$p: .TH says '$name $sec' (got '$th')"
done

# 2. Every program has a page, and README.md mentions it.
for c in cmd/*.c; do
    prog=${c#cmd/}
    prog=${prog%.c}
    [ -f "man/man1/$prog.1" ]
    ok $? "$prog has man/man1/$prog.1"
    grep -q "$prog" README.md
    ok $? "README.md mentions $prog"
done

# 3. --help against the page.
for c in cmd/*.c; do
    prog=${c#cmd/}
    prog=${prog%.c}
    page=man/man1/$prog.1
    [ -f "$page" ] || continue
    if [ ! -x "$bin/$prog" ]; then
        skip "$bin/$prog not built"
        continue
    fi
    "$bin/$prog" --help >"$tmp/help" 2>&1 </dev/null
    ok $? "$prog --help exits 0"
    for opt in --help --version; do
        has_word "$page" "$opt"
        ok $? "$page documents $opt"
    done
    # Long options and short ones ("-e", "-e," "[-e", "-e|") as --help prints them.
    opts=$( {
        grep -oE -- '--[a-z0-9][a-z0-9-]*' "$tmp/help"
        grep -oE -- '(^|[][ ,|(])-[A-Za-z]([][ ,|=)]|$)' "$tmp/help" | grep -oE -- '-[A-Za-z]'
    } | sort -u)
    for opt in $opts; do
        case "$opt" in --help|--version) continue ;; esac
        has_word "$page" "$opt"
        ok $? "$prog --help shows $opt; $page documents it"
    done
    if grep -qi 'not implemented' "$tmp/help"; then h=1; else h=0; fi
    if grep -qi 'not implemented' "$page"; then m=1; else m=0; fi
    [ $h = $m ]
    ok $? "$prog: --help and $page agree on whether it is implemented (help $h, page $m)"
done

# 4. gpt-tokenize's commands are each described in its page (and shown by --help when built).
page=man/man1/gpt-tokenize.1
for cmd in encode decode pack unpack count info train; do
    # A command is documented by a ".B cmd" item in the COMMANDS section.
    sed -n '/^\.SH COMMANDS/,/^\.SH [^C]/p' "$page" | grep -qx "\.B $cmd"
    ok $? "$page: COMMANDS describes $cmd"
    if [ -x "$bin/gpt-tokenize" ]; then
        "$bin/gpt-tokenize" --help 2>&1 </dev/null | grep -qw -- "$cmd"
        ok $? "gpt-tokenize --help mentions $cmd"
    fi
done
for sect in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS ENCODINGS PRE-TOKENIZATION 'SPECIAL TOKENS' \
        THREADS FILES ENVIRONMENT 'EXIT STATUS' EXAMPLES 'SEE ALSO'; do
    grep -qx "\.SH \"\{0,1\}$sect\"\{0,1\}" "$page"
    ok $? "$page has a $sect section"
done

echo "1..$n"
[ $fails -eq 0 ]
