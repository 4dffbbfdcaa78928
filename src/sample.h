/* Generation: prefill a prompt with the sequence scan, then one recurrent step per token, sampling
 * with temperature, top-k and top-p (nucleus). */
#ifndef SSM_SAMPLE_H
#define SSM_SAMPLE_H

#include "common.h"
#include "ssm.h"


/* Picks a token from logits [V] (logits is used as scratch). */
int sample_token(float *logits, int V, const ssm_sample_options *o, rng_t *rng);

#endif
