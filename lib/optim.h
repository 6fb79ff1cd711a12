/* optim.h: AdamW, the learning-rate schedule, gradient clipping and the dynamic loss scaler.
 *
 *   gpt_adamw opt;
 *   gpt_adamw_init(&opt, tab, lo, hi, &hp);             // owns elements [lo, hi) of the flat buffer
 *   double lr = gpt_lr_at(&sched, step);                // step counts from 0
 *   double norm = sqrt(gpt_sumsq(grads, n));            // L2 over the whole gradient
 *   float clip = gpt_clip_coef(norm, 1.0);              // multiply the gradient by it
 *   gpt_adamw_step(&opt, params + lo, grads + lo, lr, clip);
 *
 * Everything works on host fp32 arrays; the optimizer state (m, v) is fp32 like PyTorch's, and
 * each update follows torch.optim.AdamW's single-tensor order of operations, so the results agree
 * to fp32 rounding (t/test_optim.c checks it against recorded PyTorch steps). An optimizer may own
 * just a slice of the parameters: that is how ZeRO-1 shards the state over data-parallel ranks. */
#ifndef GPT_OPTIM_H
#define GPT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "params.h"

typedef struct gpt_adamw_hparams {
    double beta1, beta2, eps, weight_decay; /* decay applies to tensors gpt_tensor_decays() picks */
} gpt_adamw_hparams;

/* A run of elements with one decay setting. */
typedef struct gpt_optim_range {
    size_t lo, hi; /* absolute offsets into the flat buffer */
    int decay;
} gpt_optim_range;

typedef struct gpt_adamw {
    gpt_adamw_hparams hp;
    size_t lo, hi;          /* the slice of the flat buffer this optimizer owns */
    gpt_backend *be;        /* NULL: m, v, params and grads are host arrays; else that backend's memory */
    float *m, *v;           /* hi - lo each */
    gpt_optim_range *ranges;
    int n_ranges;
    int64_t step;           /* updates taken so far (bias correction uses step + 1) */
} gpt_adamw;

/* Owns [lo, hi) of the table's flat buffer (0, tab->total for everything). State starts at zero. */
int gpt_adamw_init(gpt_adamw *o, const gpt_param_table *tab, size_t lo, size_t hi, const gpt_adamw_hparams *hp,
                   gpt_err *err);
/* The same with the state in backend memory (be->adamw must exist): gpt_adamw_step then takes
 * backend pointers and runs be->adamw once per decay range. */
int gpt_adamw_init_on(gpt_adamw *o, gpt_backend *be, const gpt_param_table *tab, size_t lo, size_t hi,
                      const gpt_adamw_hparams *hp, gpt_err *err);
void gpt_adamw_free(gpt_adamw *o);
/* One update of params[0, hi-lo) (the owned slice) with grads (same slice) * grad_scale. */
void gpt_adamw_step(gpt_adamw *o, float *params, const float *grads, double lr, float grad_scale);
/* Copies the moments out of (get) or into (set) the optimizer: host arrays of hi - lo floats. */
void gpt_adamw_state_get(const gpt_adamw *o, float *m, float *v);
void gpt_adamw_state_set(gpt_adamw *o, const float *m, const float *v);
/* The element update every backend's adamw op reproduces bit for bit (host arrays). */
void gpt_adamw_update(float *p, const float *g, float *m, float *v, size_t n, const gpt_adamw_args *a);

/* Linear warmup over warmup_steps, then cosine decay from lr to min_lr_ratio * lr at total_steps
 * (and flat after). step counts from 0: step s < warmup uses lr * (s + 1) / warmup; from
 * warmup on, progress = (s - warmup) / (total - warmup). This is PyTorch's LinearLR(1/warmup,
 * 1, warmup - 1) followed by CosineAnnealingLR(total - warmup, min) at milestone warmup. */
typedef struct gpt_lr_schedule {
    double lr, min_lr_ratio;
    int64_t warmup_steps, total_steps;
} gpt_lr_schedule;
double gpt_lr_at(const gpt_lr_schedule *s, int64_t step);

/* The sum of squares of n floats in double (inf/NaN propagate), in an order that does not depend on
 * the thread count. Ranks add theirs before the square root. */
double gpt_sumsq(const float *x, size_t n);
/* The factor that clips a gradient of this norm to max_norm, as torch.nn.utils.clip_grad_norm_:
 * min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (clipping off). */
float gpt_clip_coef(double norm, double max_norm);

/* Dynamic loss scaling as torch.amp.GradScaler: an overflow multiplies the scale by backoff and
 * the step is skipped; growth_interval clean steps in a row multiply it by growth. */
typedef struct gpt_loss_scaler {
    double scale, growth, backoff;
    int64_t growth_interval, good_steps;
    int enabled;
} gpt_loss_scaler;
void gpt_loss_scaler_init(gpt_loss_scaler *s, int enabled, double init_scale, double growth, double backoff,
                          int64_t interval);
/* Records one step's outcome; returns 1 when the step may be applied, 0 when it must be skipped. */
int gpt_loss_scaler_update(gpt_loss_scaler *s, int found_inf);
/* Whether any of n floats is inf or NaN. */
int gpt_has_nonfinite(const float *x, size_t n);

#endif
