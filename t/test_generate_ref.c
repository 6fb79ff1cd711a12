/* Greedy and beam search equal Hugging Face generate, and windowed evaluation equals the loss
 * transformers computes, on the tiny fixtures (t/data/gen/generate.txt and eval.txt, written by
 * scripts/make-generate-fixtures.py from t/data/ref models; see that script for the fields). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "generate.h"
#include "model_load.h"
#include "tap.h"

static size_t parse_ids(char *s, uint32_t *out, size_t cap)
{
    size_t n = 0;
    if (!strcmp(s, "-")) return 0;
    for (char *t = strtok(s, ","); t && n < cap; t = strtok(NULL, ",")) out[n++] = (uint32_t)strtoul(t, NULL, 10);
    return n;
}

static char *field(char **p)
{
    char *s = *p, *bar = strchr(s, '|');
    if (bar) *bar = 0, *p = bar + 1;
    else *p = s + strlen(s);
    return s;
}

typedef struct {
    char name[64];
    gpt_loaded_model lm;
    int ok;
} model_slot;

static gpt_model *get_model(model_slot *slots, int *n, const char *name, gpt_backend *be)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(slots[i].name, name)) return slots[i].ok ? slots[i].lm.model : NULL;
    model_slot *s = &slots[(*n)++];
    snprintf(s->name, sizeof s->name, "%s", name);
    char path[256];
    snprintf(path, sizeof path, "t/data/ref/%s", name);
    gpt_err err;
    s->ok = gpt_model_open(&s->lm, path, be, NULL, 0, &err) == 0;
    if (!s->ok) diag("%s: %s", name, err.msg);
    return s->ok ? s->lm.model : NULL;
}

int main(void)
{
    omp_set_num_threads(1); /* tiny models: threads only add overhead (20 s vs 1 s here) */
    gpt_backend *be = gpt_backend_cpu();
    model_slot slots[4];
    int nslots = 0;
    char line[8192];
    FILE *f = fopen("t/data/gen/generate.txt", "r");
    if (!f) skip_all("t/data/gen/generate.txt missing (run scripts/make-generate-fixtures.py)");
    int n_greedy = 0, n_beam = 0, bad_greedy = 0, bad_beam = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        line[strcspn(line, "\n")] = 0;
        char *p = line;
        char *name = field(&p), *nb = field(&p), *lp = field(&p), *es = field(&p), *mx = field(&p);
        char *eos_s = field(&p), *prompt_s = field(&p), *exp_s = field(&p);
        uint32_t eos[8], prompt[256], expect[256];
        size_t n_eos = parse_ids(eos_s, eos, 8), n_prompt = parse_ids(prompt_s, prompt, 256);
        size_t n_exp = parse_ids(exp_s, expect, 256);
        gpt_model *m = get_model(slots, &nslots, name, be);
        if (!m) continue;
        gpt_gen_opts o = gpt_gen_defaults();
        o.max_new_tokens = atoi(mx);
        o.num_beams = atoi(nb);
        o.length_penalty = atof(lp);
        o.early_stopping = !strcmp(es, "true") ? 1 : !strcmp(es, "never") ? -1 : 0;
        o.eos = eos, o.n_eos = (int)n_eos;
        gpt_gen_req r = {.prompt = prompt, .n_prompt = n_prompt};
        gpt_err err;
        int rc = gpt_generate(m, NULL, &o, &r, 1, NULL, NULL, &err);
        int same = rc == 0 && r.out.n == n_exp && (n_exp == 0 || !memcmp(r.out.v, expect, n_exp * sizeof *expect));
        int stop_ok = rc == 0 && r.finish == (n_exp && gpt_gen_is_eos(&o, expect[n_exp - 1]) ? GPT_FINISH_STOP : GPT_FINISH_LENGTH);
        if (o.num_beams > 1) n_beam++, bad_beam += !same || !stop_ok;
        else n_greedy++, bad_greedy += !same || !stop_ok;
        if (!same || !stop_ok) {
            diag("%s beams %s lp %s es %s eos %s prompt %s: expected %s (%s), got %zu tokens (finish %s)%s", name, nb, lp,
                 es, eos_s, prompt_s, exp_s, n_exp ? "ok" : "", r.out.n, gpt_finish_name(r.finish), rc < 0 ? err.msg : "");
            for (size_t i = 0; i < r.out.n; i++) diag("  got[%zu] = %u", i, r.out.v[i]);
        }
        gpt_gen_req_free(&r);
    }
    fclose(f);
    ok(n_greedy > 0 && bad_greedy == 0, "greedy equals HF generate in %d/%d cases", n_greedy - bad_greedy, n_greedy);
    ok(n_beam > 0 && bad_beam == 0, "beam search equals HF generate in %d/%d cases", n_beam - bad_beam, n_beam);

    f = fopen("t/data/gen/eval.txt", "r");
    ok(f != NULL, "t/data/gen/eval.txt exists");
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        line[strcspn(line, "\n")] = 0;
        char *p = line;
        char *name = field(&p), *sl = field(&p), *sr = field(&p), *ids_s = field(&p), *nll_s = field(&p);
        char *ns_s = field(&p), *nc_s = field(&p);
        static uint32_t ids[4096];
        size_t n = parse_ids(ids_s, ids, 4096);
        gpt_model *m = get_model(slots, &nslots, name, be);
        if (!m) continue;
        for (int batch = 1; batch <= 3; batch += 2) {
            gpt_eval_opts o = {atoi(sl), atoi(sr), batch};
            gpt_eval_result r = {0};
            gpt_err err;
            int rc = gpt_eval_tokens(m, ids, n, &o, NULL, NULL, &r, &err);
            double want = atof(nll_s);
            ok(rc == 0 && r.n_scored == atoll(ns_s) && r.n_correct == atoll(nc_s) &&
                   fabs(r.sum_nll - want) <= 1e-4 * fabs(want),
               "%s eval seq_len %s stride %s batch %d: nll %.6f over %lld (HF %.6f over %s), correct %lld (HF %s)%s%s",
               name, sl, sr, batch, r.sum_nll, r.n_scored, want, ns_s, r.n_correct, nc_s, rc < 0 ? ": " : "",
               rc < 0 ? err.msg : "");
        }
    }
    if (f) fclose(f);
    for (int i = 0; i < nslots; i++)
        if (slots[i].ok) gpt_model_close(&slots[i].lm);
    be->destroy(be);
    return done_testing();
}
