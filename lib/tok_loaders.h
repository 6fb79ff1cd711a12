/* tok_loaders.h: what the GPT-2 (vocab.bpe + encoder.json) and Hugging Face tokenizer.json
 * loaders share (lib/ only): the byte-level vocabulary builder and in-memory entry points.
 *
 * Both formats name tokens by "mapped strings": every byte is shown as one printable character
 * (GPT-2's bytes_to_unicode), so a token's key is valid UTF-8 whatever its bytes are. */
#ifndef GPT_TOK_LOADERS_H
#define GPT_TOK_LOADERS_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer_build.h"

/* Ids at or above this are refused: no real vocabulary comes near it, and a hostile file must
 * not make gpt_tk_finish size its tables by one huge id. */
#define GPT_LOADER_MAX_ID (1u << 22)

/* The forward mapping (raw bytes -> UTF-8 of mapped characters). Each byte takes 1 or 2 output
 * bytes. Returns the length written (no NUL) or -1 when cap is too small. */
long gpt_bytelevel_encode(const unsigned char *b, size_t n, char *out, size_t cap);

/* A byte-level vocabulary under construction: mapped key -> id, plus the tokenizer it feeds.
 * Keys are not copied; the caller keeps them alive until gpt_blvocab_free. */
typedef struct gpt_blvocab {
    gpt_tokenizer *tk;
    struct gpt_blslot *slots;
    size_t cap, n;
    size_t n_multi, n_merges; /* multi-byte tokens and merges added */
    unsigned char *used; /* bitmap over ids < GPT_LOADER_MAX_ID, for duplicate-id errors */
    char *buf;           /* scratch for decoded bytes and concatenated keys */
    size_t bufcap;
} gpt_blvocab;

void gpt_blvocab_init(gpt_blvocab *v, gpt_tokenizer *tk, size_t expected);
void gpt_blvocab_free(gpt_blvocab *v);
/* Marks an id as taken without adding an ordinary token (special tokens), so that a later
 * ordinary token with the same id is reported. `where` names the place for the error. */
int gpt_blvocab_claim_id(gpt_blvocab *v, double id, uint32_t *out, const char *where, gpt_err *err);
/* Adds ordinary token `key` (mapped string) with id `id` (a JSON number: checked to be an
 * integer in range). Errors name `where` and the key. */
int gpt_blvocab_add(gpt_blvocab *v, const char *key, size_t klen, double id, const char *where,
                    gpt_err *err);
/* Id of a mapped key, or -1. */
int64_t gpt_blvocab_get(const gpt_blvocab *v, const char *key, size_t klen);
/* Adds the merge (a, b): both and their concatenation must be in the vocabulary. */
int gpt_blvocab_merge(gpt_blvocab *v, const char *a, size_t alen, const char *b, size_t blen,
                      const char *where, gpt_err *err);

/* Refuses a vocabulary with multi-byte tokens but no merges: the core would then merge by id (tiktoken
 * ranks), while the merge-list formats would never merge at all. `what` names the merge list. */
int gpt_blvocab_check_merges(const gpt_blvocab *v, const char *what, gpt_err *err);

/* Writes a short, printable, quoted rendering of a key (hostile bytes escaped, long keys cut)
 * into out[cap]; returns out. */
const char *gpt_quote_key(const char *key, size_t len, char *out, size_t cap);

/* In-memory loaders (fuzzing, tests); `name` / `vocab_name` / `encoder_name` are only used in
 * messages and as the tokenizer's name. */
gpt_tokenizer *gpt_load_hf_json_mem(const char *data, size_t len, const char *name, gpt_err *err);
gpt_tokenizer *gpt_load_gpt2_mem(const char *vocab_bpe, size_t vlen, const char *vocab_name,
                                 const char *encoder_json, size_t elen, const char *encoder_name,
                                 gpt_err *err);

#endif
