#!/usr/bin/env python3
"""Builds the tokenizer fixtures under t/data/hf/ with independent oracles.

  pip install tokenizers tiktoken
  scripts/make-hf-tokenizer-fixture.py [--shared DIR]     (DIR default: ../shared)

Hugging Face `tokenizers` trains three small byte-level BPEs on text generated here
(deterministically) and saves them as tokenizer.json files; for each, a .cases file records what
`tokenizers` itself encodes a set of test strings to. tiktoken's "gpt2" encoding, built from the
shared vocab.bpe + encoder.json, gives gpt2-tiktoken.cases the same way.

.cases format: '#' comment lines, then one case per line: hex of the UTF-8 input, a tab, the ids
separated by spaces. t/test_loaders.c compares our encoder with these ids exactly.
"""
import argparse
import json
import os
import random
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "t", "data", "hf")

CL100K = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
          r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
O200K = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

SYL = ["ka", "lo", "mi", "ther", "an", "st", "ing", "re", "qu", "ion", "pr", "ou", "sh", "el", "ed",
       "tion", "ab", "x", "zz", "er", "the", "of", "and", "wh", "oo", "ight", "ph", "y"]
UNI = ["café", "naïve", "straße", "Ελληνικά", "μῆνιν", "русский", "язык", "日本語", "中文字",
       "한국어", "عربى", "עברית", "हिन्दी", "ñandú", "Æsir", "øre", "ﬁne", "e\u0301", "👍", "👨‍👩‍👧",
       "🇫🇷", "½", "²³", "Ⅻ", "٣٤", "€", "™", "—", "…", "«»", "\u00a0", "\u3000", "\u2028", "\u0085"]
PUNCT = [".", ",", "!", "?", ";", ":", "...", "--", "'", '"', "(", ")", "[", "]", "{", "}", "<", ">",
         "/", "\\", "@", "#", "$", "%", "^", "&", "*", "+", "=", "~", "`", "|", "_", "-"]
CONTR = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re"]
SPACES = [" ", " ", " ", " ", "  ", "\t", "\n", "\n\n", "   ", "\r\n", " \n ", "\u00a0"]


def word(r):
    w = "".join(r.choice(SYL) for _ in range(r.randint(1, 4)))
    k = r.random()
    if k < 0.15:
        w = w.capitalize()
    elif k < 0.2:
        w = w.upper()
    return w


def token(r):
    k = r.random()
    if k < 0.6:
        t = word(r)
        if r.random() < 0.1:
            t += r.choice(CONTR)
        return t
    if k < 0.72:
        return str(r.randint(0, 10 ** r.randint(1, 8)))
    if k < 0.84:
        return r.choice(PUNCT) * r.randint(1, 2)
    return r.choice(UNI)


def text(r, n):
    out = []
    for _ in range(n):
        out.append(token(r))
        out.append(r.choice(SPACES) if r.random() < 0.85 else "")
    return "".join(out)


def training_text():
    r = random.Random(20240601)
    return [text(r, 40) for _ in range(120)]


def test_strings(special_texts):
    r = random.Random(7)
    fixed = ["", " ", "  ", "\n", "hello world", "Hello, World!", "I'll've done it's", "HE'S", "  leading",
             "trailing  ", "a\n\nb", "a \n b", "tabs\t\tand\tspaces", "12345678901234567890", "3.14159",
             "x" * 200, " " * 50, "\n" * 20, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ababababababababab",
             "the the the the", "日本語のテキスト", "emoji 👨‍👩‍👧 🇫🇷 👍🏽", "mixed123abc!!?", "'s's's",
             "\u00a0\u00a0nbsp", "line\r\nbreak\r\n", "end with space ", "\u2028sep", "x\u0085y",
             "e\u0301\u0301\u0301", "ﬁﬂ", "!!!???...", "(((nested)))", "a" + "\u0300" * 10]
    for s in special_texts:
        fixed += [s, "before" + s + "after", s + s, " " + s + " x", s[:-1], "<" + s]
    rnd = [text(r, r.randint(1, 25)) for _ in range(220)]
    return fixed + rnd


def write_cases(path, comment, cases):
    with open(path, "w", encoding="utf-8") as f:
        f.write("# " + comment + "\n# hex of the UTF-8 input <TAB> ids\n")
        for s, ids in cases:
            f.write(s.encode("utf-8").hex() + "\t" + " ".join(map(str, ids)) + "\n")


def add_shortcuts(js, path):
    """Makes ignore_merges matter: adds whole words from the test strings to the vocabulary with
    a last-ranked merge that BPE never reaches for them (their merge path ends in other tokens), so
    only the whole-word lookup finds them. `tokenizers` then decides what the ids are."""
    tmp = Tokenizer.from_file(path)
    vocab = js["model"]["vocab"]
    next_id = max(list(vocab.values()) + [a["id"] for a in js["added_tokens"]]) + 1
    seen = set()
    for s in test_strings([]):
        for w, _ in tmp.pre_tokenizer.pre_tokenize_str(s):
            if w in vocab or w in seen or len(w) < 4:
                continue
            seen.add(w)
            path_end = [t.value for t in tmp.model.tokenize(w)]
            if len(path_end) < 2:
                continue
            for k in range(1, len(w)):
                if w[:k] in vocab and w[k:] in vocab and path_end != [w[:k], w[k:]]:
                    vocab[w] = next_id
                    next_id += 1
                    js["model"]["merges"].append([w[:k], w[k:]])
                    break
            if next_id >= 620:
                return


def train(name, pre, ignore_merges, legacy_merges, extra_added):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges) if ignore_merges else models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=600, min_frequency=2, show_progress=False,
                             special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer=tr)
    if extra_added:
        tok.add_tokens(extra_added)  # ordinary (non-special) added tokens
    path = os.path.join(OUT, name + ".json")
    tok.save(path)
    js = json.load(open(path, encoding="utf-8"))
    if ignore_merges:
        add_shortcuts(js, path)
    if legacy_merges:
        # The older "a b" string form, which other tools still write; `tokenizers` reads both.
        js["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in js["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(js, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    oracle = Tokenizer.from_file(path)  # the file as written is what we test
    specials = [a["content"] for a in js["added_tokens"]]
    cases = [(s, oracle.encode(s, add_special_tokens=False).ids) for s in test_strings(specials)]
    write_cases(os.path.join(OUT, name + ".cases"),
                f"{name}.json encoded by tokenizers {__import__('tokenizers').__version__}", cases)
    print(f"{path}: {os.path.getsize(path)} bytes, vocab {oracle.get_vocab_size()}, {len(cases)} cases")


def gpt2_cases(shared):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    d = os.path.join(shared, "tokenizers")
    ranks = data_gym_to_mergeable_bpe_ranks(os.path.join(d, "vocab.bpe"), os.path.join(d, "encoder.json"))
    enc = tiktoken.Encoding("gpt2-files", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    strings = test_strings(["<|endoftext|>"])
    r = random.Random(99)
    strings += [text(r, r.randint(10, 40)) for _ in range(40)]
    cases = [(s, enc.encode(s, allowed_special="all")) for s in strings]
    write_cases(os.path.join(OUT, "gpt2-tiktoken.cases"),
                f"tiktoken {tiktoken.__version__} 'gpt2' (from shared vocab.bpe + encoder.json), allowed_special=all",
                cases)
    print(f"gpt2-tiktoken.cases: {len(cases)} cases")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("GPT_SHARED", "../shared"))
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    train("bytelevel", bl, False, False, None)

    def split(pat):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    train("split-cl100k", split(CL100K), False, True, ["hello world", "zzqu"])
    train("split-o200k-ignore-merges", split(O200K), True, False, None)
    if os.path.isdir(os.path.join(a.shared, "tokenizers")):
        gpt2_cases(a.shared)
    else:
        print(f"{a.shared}/tokenizers not found: gpt2-tiktoken.cases not written", file=sys.stderr)


if __name__ == "__main__":
    main()
