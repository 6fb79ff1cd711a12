/* harmony.c: the harmony chat format (see harmony.h). */
#include "harmony.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int special(const gpt_tokenizer *tk, const char *text, uint32_t *id, gpt_err *err)
{
    int64_t v = gpt_tokenizer_special_id(tk, text);
    if (v < 0)
        return gpt_errf(err, "tokenizer %s has no %s token: --chat needs the harmony vocabulary (o200k_harmony)",
                        gpt_tokenizer_name(tk), text);
    *id = (uint32_t)v;
    return 0;
}

int gpt_harmony_lookup(const gpt_tokenizer *tk, gpt_harmony_ids *ids, gpt_err *err)
{
    if (special(tk, "<|start|>", &ids->start, err) < 0 || special(tk, "<|message|>", &ids->message, err) < 0 ||
        special(tk, "<|channel|>", &ids->channel, err) < 0 || special(tk, "<|end|>", &ids->end, err) < 0 ||
        special(tk, "<|return|>", &ids->ret, err) < 0 || special(tk, "<|call|>", &ids->call, err) < 0 ||
        special(tk, "<|constrain|>", &ids->constrain, err) < 0)
        return -1;
    return 0;
}

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void put(sbuf *s, const char *t, size_t n)
{
    if (s->n + n + 1 > s->cap) s->cap = (s->n + n + 1) * 2, s->p = gpt_xrealloc(s->p, s->cap);
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}
static void puts_(sbuf *s, const char *t) { put(s, t, strlen(t)); }

/* The template around the user's text, in pieces: head + user + tail. */
static char *render_head(const gpt_harmony_opts *o, gpt_err *err)
{
    const char *r = o->reasoning ? o->reasoning : "medium";
    if (strcmp(r, "low") && strcmp(r, "medium") && strcmp(r, "high")) {
        gpt_errf(err, "reasoning level '%s': use low, medium or high", r);
        return NULL;
    }
    char date[32];
    if (o->date) {
        snprintf(date, sizeof date, "%s", o->date);
    } else {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%Y-%m-%d", &tm);
    }
    sbuf s = {0};
    puts_(&s, "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
              "Knowledge cutoff: 2024-06\nCurrent date: ");
    puts_(&s, date);
    puts_(&s, "\n\nReasoning: ");
    puts_(&s, r);
    puts_(&s, "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>");
    if (o->instructions && *o->instructions) {
        puts_(&s, "<|start|>developer<|message|># Instructions\n\n");
        puts_(&s, o->instructions);
        puts_(&s, "<|end|>");
    }
    puts_(&s, "<|start|>user<|message|>");
    return s.p;
}

static const char TAIL[] = "<|end|><|start|>assistant";

char *gpt_harmony_render(const gpt_harmony_opts *o, const char *user, size_t user_len, gpt_err *err)
{
    char *head = render_head(o, err);
    if (!head) return NULL;
    sbuf s = {0};
    puts_(&s, head);
    put(&s, user, user_len);
    puts_(&s, TAIL);
    free(head);
    return s.p;
}

int gpt_harmony_encode(const gpt_tokenizer *tk, const gpt_harmony_opts *o, const char *user, size_t user_len,
                       gpt_ids *out, gpt_err *err)
{
    gpt_harmony_ids ids;
    if (gpt_harmony_lookup(tk, &ids, err) < 0) return -1;
    char *head = render_head(o, err);
    if (!head) return -1;
    unsigned char *all = NULL;
    int rc = -1;
    if (gpt_special_mask(tk, "all", &all, err) < 0) goto out;
    if (gpt_encode(tk, head, strlen(head), all, out, err) < 0 || gpt_encode(tk, user, user_len, NULL, out, err) < 0 ||
        gpt_encode(tk, TAIL, strlen(TAIL), all, out, err) < 0)
        goto out;
    rc = 0;
out:
    free(all);
    free(head);
    return rc;
}

void gpt_harmony_parser_init(gpt_harmony_parser *p, const gpt_harmony_ids *ids)
{
    memset(p, 0, sizeof *p);
    p->ids = *ids;
    p->state = 0; /* the reply starts right after "<|start|>assistant" */
}

size_t gpt_harmony_feed(gpt_harmony_parser *p, const gpt_tokenizer *tk, uint32_t id, const unsigned char **bytes)
{
    const gpt_harmony_ids *h = &p->ids;
    if (id == h->start || id == h->end || id == h->ret || id == h->call) {
        p->state = 0, p->final = 0;
        return 0;
    }
    if (id == h->channel) {
        p->state = 1, p->channel_len = 0;
        return 0;
    }
    if (id == h->message) {
        /* "final", possibly followed by " to=..." or "<|constrain|>..." */
        p->final = p->channel_len >= 5 && memcmp(p->channel, "final", 5) == 0 &&
                   (p->channel_len == 5 || p->channel[5] == ' ' || p->channel[5] == '<');
        p->state = 2;
        return 0;
    }
    size_t n = 0;
    const unsigned char *b = gpt_tokenizer_token(tk, id, &n);
    if (!b) return 0;
    if (p->state == 1) {
        for (size_t i = 0; i < n && p->channel_len < sizeof p->channel - 1; i++) p->channel[p->channel_len++] = (char)b[i];
        return 0;
    }
    if (p->state == 2 && p->final) {
        *bytes = b;
        return n;
    }
    return 0;
}
