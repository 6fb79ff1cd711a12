/* encodings.c: the built-in encodings and gpt_tokenizer_open's dispatch by name or file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "tokenizer_build.h"

#ifndef GPT_SHARE_DIR
#define GPT_SHARE_DIR "/usr/local/share/gpt"
#endif

/* tiktoken's patterns, character for character (tiktoken_ext/openai_public.py). */
const char gpt_pat_r50k[] =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s";
const char gpt_pat_cl100k[] =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$"
    "|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";
const char gpt_pat_o200k[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

typedef struct {
    const char *text;
    uint32_t id;
} named_id;

typedef struct {
    const char *name, *file, *pattern;
    uint32_t n_vocab;
    const named_id *specials;
    int harmony; /* every other id in [200000, n_vocab) is <|reserved_N|>, recognised as special */
} builtin;

static const named_id r50k_specials[] = {{"<|endoftext|>", 50256}, {NULL, 0}};
static const named_id cl100k_specials[] = {{"<|endoftext|>", 100257}, {"<|fim_prefix|>", 100258},
                                           {"<|fim_middle|>", 100259}, {"<|fim_suffix|>", 100260},
                                           {"<|endofprompt|>", 100276}, {NULL, 0}};
static const named_id o200k_specials[] = {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}, {NULL, 0}};
static const named_id harmony_specials[] = {
    {"<|startoftext|>", 199998}, {"<|endoftext|>", 199999}, {"<|return|>", 200002},
    {"<|constrain|>", 200003},   {"<|channel|>", 200005},   {"<|start|>", 200006},
    {"<|end|>", 200007},         {"<|message|>", 200008},   {"<|call|>", 200012},
    {NULL, 0}};

static const builtin builtins[] = {
    {"o200k_harmony", "o200k_base.tiktoken", gpt_pat_o200k, 201088, harmony_specials, 1},
    {"o200k_base", "o200k_base.tiktoken", gpt_pat_o200k, 200019, o200k_specials, 0},
    {"cl100k_base", "cl100k_base.tiktoken", gpt_pat_cl100k, 100277, cl100k_specials, 0},
    {"r50k_base", "r50k_base.tiktoken", gpt_pat_r50k, 50257, r50k_specials, 0},
    {"gpt2", "r50k_base.tiktoken", gpt_pat_r50k, 50257, r50k_specials, 0},
};

static const builtin *find_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++)
        if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
    return NULL;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds the rank file of a built-in; on failure says where it looked and how to get it. */
static char *find_rank_file(const builtin *b, gpt_err *err)
{
    char looked[700] = "";
    size_t used = 0;
    const char *env = getenv("GPT_TOKENIZER_PATH");
    /* $GPT_TOKENIZER_PATH, then where scripts/fetch-tokenizers puts files by default, then the
     * installed share/. */
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    char user[512] = "";
    if (xdg && *xdg)
        snprintf(user, sizeof user, "%s/gpt/tokenizers:", xdg);
    else if (home && *home)
        snprintf(user, sizeof user, "%s/.local/share/gpt/tokenizers:", home);
    char *dirs = gpt_xmalloc((env ? strlen(env) : 0) + strlen(user) + strlen(GPT_SHARE_DIR) + 32);
    sprintf(dirs, "%s%s%s%s/tokenizers", env && *env ? env : "", env && *env ? ":" : "", user, GPT_SHARE_DIR);
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        size_t n = strlen(d) + strlen(b->file) + 2;
        char *path = gpt_xmalloc(n);
        snprintf(path, n, "%s/%s", d, b->file);
        if (is_file(path)) {
            free(dirs);
            return path;
        }
        free(path);
        if (used < sizeof looked - 2) used += (size_t)snprintf(looked + used, sizeof looked - used, "%s%s", used ? ", " : "", d);
    }
    free(dirs);
    gpt_errf(err,
             "encoding %s needs %s, which was not found (looked in: %s; GPT_TOKENIZER_PATH is %s). "
             "Pass --vocab FILE, set GPT_TOKENIZER_PATH to a directory holding it, or download the official "
             "files with scripts/fetch-tokenizers",
             b->name, b->file, looked, env && *env ? "set" : "unset");
    return NULL;
}

static gpt_tokenizer *open_builtin(const builtin *b, const char *vocab_file, const char *pattern, gpt_err *err)
{
    char *found = NULL;
    if (!vocab_file && !(vocab_file = found = find_rank_file(b, err))) return NULL;
    gpt_blob blob;
    if (gpt_blob_read(&blob, vocab_file, err) < 0) {
        free(found);
        return NULL;
    }
    gpt_tokenizer *tk = gpt_tk_new(b->name);
    int rc = gpt_parse_tiktoken(tk, blob.data, blob.size, vocab_file, err);
    gpt_blob_free(&blob);
    /* tiktoken's o200k_harmony keeps o200k_base's <|endofprompt|> at 200018: it names the id
     * (decode) and <|reserved_200018|> is an alias of it. */
    if (rc == 0 && b->harmony) rc = gpt_tk_add_special(tk, "<|endofprompt|>", 200018, err);
    if (rc == 0 && b->harmony) {
        for (uint32_t id = 200000; id < b->n_vocab && rc == 0; id++) {
            int named = 0;
            for (const named_id *s = b->specials; s->text; s++) named |= s->id == id;
            if (named) continue;
            char text[32];
            snprintf(text, sizeof text, "<|reserved_%u|>", id);
            rc = gpt_tk_add_special(tk, text, id, err);
        }
    }
    for (const named_id *s = b->specials; rc == 0 && s->text; s++) rc = gpt_tk_add_special(tk, s->text, s->id, err);
    if (rc == 0) rc = gpt_tk_finish(tk, pattern ? pattern : b->pattern, b->n_vocab, err);
    if (rc == 0 && gpt_tokenizer_n_ordinary(tk) + 1 > b->n_vocab) rc = -1;
    if (rc < 0) {
        gpt_err_prefix(err, "%s", vocab_file);
        gpt_tokenizer_free(tk);
        tk = NULL;
    }
    free(found);
    return tk;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* "dir/vocab.bpe" -> "dir/encoder.json" and back. */
static char *sibling(const char *path, const char *name)
{
    size_t dir = (size_t)(base_name(path) - path), n = dir + strlen(name) + 1;
    char *s = gpt_xmalloc(n);
    memcpy(s, path, dir);
    strcpy(s + dir, name);
    return s;
}

gpt_tokenizer *gpt_tokenizer_open_tiktoken(const char *path, const char *pattern, gpt_err *err)
{
    /* A rank file named like a built-in's brings that encoding's pattern and special tokens. */
    const char *base = base_name(path);
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++) {
        const builtin *b = &builtins[i];
        if (!b->harmony && strcmp(base, b->file) == 0 && strcmp(b->name, "gpt2") != 0)
            return open_builtin(b, path, pattern, err);
    }
    char name[256];
    snprintf(name, sizeof name, "%s", base);
    if (ends_with(name, ".tiktoken")) name[strlen(name) - 9] = '\0';
    return gpt_load_tiktoken(path, name, pattern ? pattern : gpt_pat_o200k, err);
}

gpt_tokenizer *gpt_tokenizer_open(const char *spec, const char *vocab_file, gpt_err *err)
{
    const builtin *b = find_builtin(spec);
    if (b) return open_builtin(b, vocab_file, NULL, err);
    if (!is_file(spec)) {
        gpt_errf(err,
                 "unknown encoding '%s': use o200k_harmony, o200k_base, cl100k_base, r50k_base or gpt2, or the "
                 "path of a .tiktoken, tokenizer.json, vocab.bpe or encoder.json file",
                 spec);
        return NULL;
    }
    const char *base = base_name(spec);
    gpt_tokenizer *tk = NULL;
    if (ends_with(base, ".bpe") || strcmp(base, "encoder.json") == 0) {
        int is_bpe = ends_with(base, ".bpe");
        char *other = sibling(spec, is_bpe ? "encoder.json" : "vocab.bpe");
        if (!is_file(other))
            gpt_errf(err, "%s: GPT-2 vocabularies come in two files; %s is missing beside it", spec, other);
        else
            tk = is_bpe ? gpt_load_gpt2_files(spec, other, err) : gpt_load_gpt2_files(other, spec, err);
        free(other);
        return tk;
    }
    if (ends_with(base, ".json")) return gpt_load_hf_json(spec, err);
    return gpt_tokenizer_open_tiktoken(spec, NULL, err);
}
