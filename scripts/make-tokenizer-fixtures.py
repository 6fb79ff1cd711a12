#!/usr/bin/env python3
"""Regenerates t/data/tok/: tokenizer conformance fixtures whose expected ids come from tiktoken.

    pip install tiktoken
    scripts/make-tokenizer-fixtures.py            # reads ${GPT_SHARED:-../shared}/tokenizers
    scripts/make-tokenizer-fixtures.py --oracle ENCODING FILE...   # tiktoken's ids, a line a file

tiktoken is the oracle: the rank files are loaded from the shared directory (no network) and the
patterns and special tokens are taken from tiktoken_ext.openai_public itself, so nothing about
the encodings is retyped here. The rank files' hashes are checked against the ones that module
expects.

Layout (all plain files a shell test can read):
  cases/NAME.in            raw input bytes
  cases/NAME.rep           "COUNT HEX": the input is the bytes HEX repeated COUNT times
  special/NAME.in          inputs containing special-token text
  expect/ENC/NAME.ids      expected `gpt-tokenize encode --format ids` output (ids, spaces, "\n")
  expect/ENC/NAME.sum      for long outputs instead: "COUNT SHA256" of that output text,
  expect/ENC/NAME.head.ids   plus the first HEAD ids for locating a difference
  expect/ENC/NAME.all.ids  special/ cases encoded with every special token allowed
  expect/ENC/info.txt      "n_vocab N" and "eot ID" as tiktoken has them
  corpus.txt               "NAME SHA256" of the shared corpus files whose sums are in expect/

Invalid UTF-8 follows our documented rule (lib/pretok.h): the input is cut into maximal runs of
valid UTF-8 and maximal runs of invalid bytes; a valid run is encoded as if it were the whole
text, an invalid run is one BPE piece.
"""

import hashlib
import os
import sys

import tiktoken
import tiktoken_ext.openai_public as openai_public

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("GPT_SHARED") or os.path.join(ROOT, "..", "shared")
TOKDIR = os.path.join(SHARED, "tokenizers")
OUT = os.path.join(ROOT, "t", "data", "tok")
ENCODINGS = ["o200k_base", "cl100k_base", "r50k_base"]
HARMONY = "o200k_harmony"
BIG = 16 * 1024  # expected outputs longer than this are stored as count + sha256 + head
HEAD = 2000
CORPORA = ["corpus/tinyshakespeare.txt"]


def load_encoding(name):
    """Builds tiktoken.Encoding `name` from the module's own constructor, with the rank file
    read from the shared directory instead of downloaded (the expected hash is still checked)."""
    real = openai_public.load_tiktoken_bpe

    def local(url, expected_hash=None):
        path = os.path.join(TOKDIR, url.rsplit("/", 1)[1])
        if not os.path.exists(path):
            sys.exit(f"make-tokenizer-fixtures: {path} is missing (run scripts/fetch-tokenizers "
                     "or set GPT_SHARED)")
        return real(path, expected_hash=expected_hash)

    openai_public.load_tiktoken_bpe = local
    try:
        return tiktoken.Encoding(**openai_public.ENCODING_CONSTRUCTORS[name]())
    finally:
        openai_public.load_tiktoken_bpe = real


def runs(data):
    """Maximal runs of valid UTF-8 and of invalid bytes, as (is_valid, bytes)."""
    text = data.decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        bad = 0xDC80 <= ord(ch) <= 0xDCFF
        b = bytes([ord(ch) - 0xDC00]) if bad else ch.encode("utf-8")
        if out and out[-1][0] == (not bad):
            out[-1][1].extend(b)
        else:
            out.append((not bad, bytearray(b)))
    return [(v, bytes(b)) for v, b in out]


def encode_bytes(enc, data):
    ids = []
    for valid, b in runs(data):
        if valid:
            ids += enc.encode_ordinary(b.decode("utf-8"))
        else:
            ids += enc._core_bpe.encode_single_piece(b)
    return ids


def lcg_bytes(seed, n, alphabet=None):
    """Deterministic pseudo-random bytes (or letters from `alphabet`) without depending on
    Python's random module staying the same across versions."""
    x = seed
    out = bytearray()
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        v = x >> 33
        out.append(alphabet[v % len(alphabet)] if alphabet else v & 0xFF)
    return bytes(out)


def u(s):
    return s.encode("utf-8")


CODE_C = u('''#include <stdio.h>

int main(int argc, char **argv)
{
\tfor (int i = 0; i < argc; i++) {
\t\tprintf("%d: %s\\n", i, argv[i]);  // print each arg
\t}
\treturn argc > 1 ? 0 : -1;
}
''')

CODE_PY = u('''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
    print({k: fib(k) for k in range(10)}, end="\\r\\n")
''')

CODE_MISC = u('''{"key": [1, 2.5e-3, null, true], "nested": {"x": "y\\u00e9"}}
$ ls -la /usr/local/bin | grep -E '^-rwx' && echo "ok" >> /tmp/log.txt 2>&1
SELECT id, COUNT(*) FROM users WHERE name LIKE '%o''brien%' GROUP BY id;
<div class="a"><p>Hello&nbsp;world&amp;co</p></div>
a<<=2; b>>>=3; c!==d; e=>f; g::h; i->j; k...l; m?.n ?? o; p**=q
''')

CASES = {
    # -- contractions
    "contractions-lower": u("it's we'll they're you've I'm he'd don't 's 't 're 've 'm 'll 'd"),
    "contractions-upper": u("IT'S WE'LL THEY'RE YOU'VE I'M HE'D DON'T 'S 'T 'RE 'VE 'M 'LL 'D"),
    "contractions-mixed": u("It'S We'Ll They'Re You'vE 'Ll 'lL 'rE 'Re 'Ve 'vE x'S X's"),
    "contractions-typographic": u("it\u2019s we\u2019ll THEY\u2019RE \u2019s \u2018quoted\u2019 "
                                  "\u201cdouble\u201d"),
    "contractions-long-s": u("it'\u017f IT'\u017f '\u017f '\u017ft we'\u017f \u017fome"),
    "kelvin-and-folds": u("\u212a \u212aelvin 5\u212a \u2126hm \u00c5ngstr\u00f6m \u212b "
                          "stra\u00dfe STRASSE \u1e9e \ufb01 \ufb00 \u0130stanbul \u0131"),
    "contractions-edge": u("'s'''s''ll' ' 'x '' ''' a'b's'c 's\n'll\t're"),
    # -- numbers
    "numbers-lengths": u("\n".join("12345678901234567890"[:n] for n in range(1, 21)) + "\n"),
    "numbers-spaced": u(" ".join(("98765432109876543210")[:n] for n in range(1, 21))),
    "numbers-separators": u("1,234,567.89 1.000.000,00 1 000 000 1_000_000 10^6 3.14159 -42 +7 "
                            "0x1F 1e10 2024-01-31 12:34:56 $1,000 50% #1 No.7 v1.2.3 192.168.0.1"),
    "numbers-letters": u("abc123def4567ghi89012jkl a1b22c333d4444 123abc 1st 2nd 3rd 4th H2O"),
    "numbers-unicode": u("\u00bd \u00b2 \u00b3 \u0663\u0664\u0665 \u0967\u0968\u0969 "
                         "\u2460\u2461 \uff11\uff12\uff13 \u2167 \u3007 \U0001d7d9"),
    # -- whitespace
    "ws-leading": u("  hello   world    again\n   indented"),
    "ws-trailing-eot": u("trailing spaces   "),
    "ws-trailing-lines": u("line one   \nline two\t\t\nline three \n \n"),
    "ws-only-spaces": u("     "),
    "ws-only-newlines": u("\n\n\n\n"),
    "ws-single-space": u(" "),
    "ws-crlf": u("a\r\nb\r\n\r\nc \r\n d\r\n"),
    "ws-lone-cr": u("a\rb\r\rc \r d\r"),
    "ws-tabs": u("\tx\t\ty \t z\t\n\t\t\n"),
    "ws-vt-ff": u("a\x0bb\x0cc \x0b\x0c d\x0b\n\x0c"),
    "ws-nbsp": u("a\u00a0b \u00a0c\u00a0\u00a0d\u00a0 \u00a0"),
    "ws-nel": u("a\u0085b \u0085 c\u0085\u0085\n\u0085"),
    "ws-line-para-sep": u("a\u2028b\u2029c \u2028 d\u2029\u2029"),
    "ws-ideographic": u("\u3000\u4e2d\u3000\u6587\u3000 x\u3000\u3000"),
    "ws-mixed": u(" \t \n \r\n \u3000\u00a0\u2003\u200a\u202f\u205f x \t\n\r\u0085\u2028  "),
    "ws-zero-width": u("a\u200bb\u200cc\u200dd\ufeffe\u2060f"),
    "empty": b"",
    # -- scripts
    "cjk": u("\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u4f60\u597d\u4e16\u754c\u3002"
             "\u7e41\u9ad4\u4e2d\u6587\u3002\U00020000\U0002a6d6"),
    "japanese": u("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca"
                  "\u3068\u3072\u3089\u304c\u306a\u3002\uff76\uff80\uff76\uff85 \u30fc\u3005"),
    "korean": u("\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4. \u1100\u1161\u11a8 "
                "\u3131\u314f"),
    "arabic": u("\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! "
                "\u0627\u0644\u0633\u064e\u0651\u0644\u0627\u0645\u064f \u0639\u064e\u0644\u064e"
                "\u064a\u0652\u0643\u064f\u0645\u0652 \u061f"),
    "hebrew": u("\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd, \u05d1\u05bc\u05b0"
                "\u05e8\u05b5\u05d0\u05e9\u05b4\u05c1\u05d9\u05ea"),
    "devanagari": u("\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e"
                    "\u0964 \u0939\u093f\u0928\u094d\u0926\u0940 \u0915\u094d\u0937"),
    "thai": u("\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01 "
              "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22"),
    "cyrillic-greek": u("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! "
                        "\u0391\u03b8\u03ae\u03bd\u03b1 \u039a\u0391\u039b\u0397\u039c\u0395"
                        "\u03a1\u0391 \u03c2\u03c3\u03a3"),
    "vietnamese": u("Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u: \u0111\u01b0\u1eddng ph\u1ed1 "
                    "Nguy\u1ec5n"),
    # -- emoji
    "emoji": u("\U0001f44d \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d"
               "\U0001f466 \U0001f3f3\ufe0f\u200d\U0001f308 \U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5"
               " \u2764\ufe0f 1\ufe0f\u20e3 hi\U0001f44bthere \U0001f600\U0001f600\U0001f600"
               "\U0001f9d1\U0001f3ff\u200d\U0001f4bb"),
    # -- combining marks
    "combining": u("e\u0301 cafe\u0301 Ame\u0301lie A\u030a \u0301abc  \u0301 x\u0301\u0302"
                   "\u0303\u0304 z\u0338\u0322\u031ba\u0335l\u0337g\u0336o ABC\u0301DEF"),
    "combining-start": u("\u0301\u0301\u0301abc"),
    # -- punctuation
    "punct-runs": u("!!!...???,,,;;; a--b ... ?!?! \"'`~@#$%^&*()_+-=[]{}|\\:;<>,.?/"),
    "punct-newlines": u("end.\nnext!\n\nq?\r\n...\n\n\n!!\r\r :)\n"),
    "slash-runs": u("a/b/c // /// ////\n\n :// /\n/ x/\r\n/y /*/\n*/ //\n\n//"),
    "url": u("http://example.com/path/to/file.html?x=1&y=2#frag https://a.b/c/ mailto:x@y.z"),
    # -- long
    "long-word-10k": lcg_bytes(7, 10000, b"abcdefghijklmnopqrstuvwxyz"),
    "long-word-10k-mixed": lcg_bytes(11, 10000, b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    # -- code
    "code-c": CODE_C,
    "code-python": CODE_PY,
    "code-misc": CODE_MISC,
    # -- case splitting (o200k splits before an upper-case letter following lower case)
    "mixed-case": u("CamelCaseWord HTTPServer XMLHttpRequest iPhone ALLCAPS McDonald's O'Neil "
                    "camelCase snake_case SCREAMING_SNAKE kebab-case \u0132SSEL \u01c4ungla "
                    "\u01c5ungla \u01c6 \u02b0\u02b1 aBcDeF ABCdef abcDEF'S HELLO'll"),
    # -- special-token text, encoded as text (special tokens not allowed)
    "special-as-text": u("<|endoftext|> a<|endoftext|>b <|endofprompt|><|fim_prefix|> "
                         "<|start|>user<|message|>hi<|end|> <|endoftext"),
    # -- invalid UTF-8
    "bad-lone-continuation": b"\x80 \xbf\x80 a\x80b \x80\x80\x80",
    "bad-truncated": b"\xe2\x82 x\xe2\x82y \xf0\x9f\x98 \xf0\x9f\x98\x80 \xc3 \xe2\x82\xe2\x82\xac",
    "bad-overlong": b"\xc0\xaf \xe0\x80\xaf \xc1\xbf \xf0\x80\x80\xaf \xc0\x80",
    "bad-surrogate": b"\xed\xa0\x80 \xed\xbf\xbf \xed\xa0\xbd\xed\xb8\x80 a\xed\xa0\x80b",
    "bad-high": b"\xf5\x80\x80\x80 \xf8\x88\x80\x80\x80 \xfe\xff \xff \xf4\x90\x80\x80 \xf7\xbf",
    "bad-in-words": b"hel\xfflo wor\x80\x80ld caf\xc3 \xe9t\xe9 Hello\xffWorld 12\xff34",
    "bad-between-spaces": b"a \xff b  \xff  c \xff\n\xff \r\xff\n\t\xff\t  \xff",
    "bad-edges": b"\xffstart middle end\xff",
    "bad-alone": b"\xff",
    "bad-then-combining": u("x") + b"\xff" + u("\u0301\u0301 y") + b"\x80" + u("\u3000"),
    "bad-random-1k": lcg_bytes(42, 1000),
    "bad-mixed-text": b"The \xe2\x80\x9cquick\xe2\x80\x9d \xc2 brown \xe6\x97\xa5\xe6\x97 fox "
                      b"\xf0\x9f\x91\x8d\xf0\x9f jumps\r\n\xc0\xafover\xed\xa0\x80",
}
for n in range(1, 21):
    CASES[f"number-{n:02d}"] = u("12345678901234567890"[:n])

# Inputs too big to commit, generated by the test: (count, unit bytes).
REPEATS = {
    "rep-a-100k": (100000, b"a"),
    "rep-A-100k": (100000, b"A"),
    "rep-space-100k": (100000, b" "),
    "rep-digit-100k": (100000, b"7"),
    "rep-bang-100k": (100000, b"!"),
    "rep-newline-100k": (100000, b"\n"),
    "rep-slash-100k": (100000, b"/"),
    "rep-ab-50k": (50000, b"ab"),
    "rep-eacute-50k": (50000, u("\u00e9")),
    "rep-cjk-30k": (30000, u("\u4e2d")),
    "rep-emoji-25k": (25000, u("\U0001f600")),
    "rep-crlf-50k": (50000, b"\r\n"),
    "rep-ff-100k": (100000, b"\xff"),
    "rep-space-word-20k": (20000, b"   word"),
}

SPECIAL = {
    "eot-middle": u("Hello<|endoftext|>World"),
    "eot-alone": u("<|endoftext|>"),
    "eot-spaces": u("   <|endoftext|>   x  <|endoftext|>\n\n"),
    "eot-twice": u("<|endoftext|><|endoftext|> <|endoftext <|endoftext|"),
    "fim": u("<|fim_prefix|>def f(<|fim_suffix|>):\n    pass<|fim_middle|><|endofprompt|>"),
    "harmony-chat": u("<|start|>system<|message|>You are ChatGPT.<|end|><|start|>user<|message|>"
                      "Hi there!<|end|><|start|>assistant<|channel|>analysis<|message|>Think."
                      "<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>"),
    "harmony-tools": u("<|start|>assistant<|channel|>commentary to=functions.get_weather "
                       "<|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>"
                       "<|startoftext|><|reserved_200013|><|reserved_201087|><|reserved_201088|>"),
}


def ids_text(ids):
    return (" ".join(map(str, ids)) + "\n").encode()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_expected(dirpath, name, ids, enc, data):
    if enc.decode_bytes(ids) != data:
        sys.exit(f"make-tokenizer-fixtures: {enc.name} {name}: tiktoken ids do not decode back")
    text = ids_text(ids)
    if len(text) <= BIG:
        write(os.path.join(dirpath, name + ".ids"), text)
    else:
        write(os.path.join(dirpath, name + ".sum"),
              f"{len(ids)} {hashlib.sha256(text).hexdigest()}\n".encode())
        write(os.path.join(dirpath, name + ".head.ids"), ids_text(ids[:HEAD]))


def oracle(encname, files):
    """Prints tiktoken's ids for each file, one line each (for differential tests)."""
    enc = load_encoding(encname)
    for path in files:
        with open(path, "rb") as f:
            sys.stdout.buffer.write(ids_text(encode_bytes(enc, f.read())))


def main():
    if len(sys.argv) > 1:
        if sys.argv[1] != "--oracle" or len(sys.argv) < 3:
            sys.exit("usage: make-tokenizer-fixtures.py [--oracle ENCODING FILE...]")
        return oracle(sys.argv[2], sys.argv[3:])
    if os.path.isdir(OUT):
        for dirpath, _, files in os.walk(OUT):
            for f in files:
                os.remove(os.path.join(dirpath, f))
    for name, data in CASES.items():
        write(os.path.join(OUT, "cases", name + ".in"), data)
    for name, (count, unit) in REPEATS.items():
        write(os.path.join(OUT, "cases", name + ".rep"), f"{count} {unit.hex()}\n".encode())
    for name, data in SPECIAL.items():
        write(os.path.join(OUT, "special", name + ".in"), data)

    corpora = []
    for rel in CORPORA:
        with open(os.path.join(SHARED, rel), "rb") as f:
            corpora.append((os.path.basename(rel).rsplit(".", 1)[0], f.read()))
    write(os.path.join(OUT, "corpus.txt"),
          "".join(f"{n} {hashlib.sha256(d).hexdigest()}\n" for n, d in corpora).encode())

    for encname in ENCODINGS + [HARMONY]:
        enc = load_encoding(encname)
        edir = os.path.join(OUT, "expect", encname)
        write(os.path.join(edir, "info.txt"),
              f"n_vocab {enc.n_vocab}\neot {enc.eot_token}\n".encode())
        if encname != HARMONY:
            for name, data in CASES.items():
                write_expected(edir, name, encode_bytes(enc, data), enc, data)
            for name, (count, unit) in REPEATS.items():
                data = unit * count
                write_expected(edir, name, encode_bytes(enc, data), enc, data)
            for name, data in corpora:
                write_expected(edir, name, encode_bytes(enc, data), enc, data)
        for name, data in SPECIAL.items():
            text = data.decode("utf-8")
            write_expected(edir, name, enc.encode_ordinary(text), enc, data)
            write_expected(edir, name + ".all", enc.encode(text, allowed_special="all"), enc, data)
        print(f"{encname}: done", file=sys.stderr)


if __name__ == "__main__":
    main()
