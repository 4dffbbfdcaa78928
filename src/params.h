/* Parameter layout: every parameter tensor of a model is a named view into one flat float buffer, in
 * declaration order. Gradients and optimizer moments use the same layout, so zeroing, AdamW,
 * clipping and checkpointing are single loops over the flat buffer. */
#ifndef SSM_PARAMS_H
#define SSM_PARAMS_H

#include <stddef.h>

#define PARAM_MAX_DIMS 4

typedef struct {
    char name[96];  /* HF MambaForCausalLM name, e.g. "backbone.layers.0.mixer.in_proj.weight" */
    int ndim;
    int shape[PARAM_MAX_DIMS];
    size_t offset;  /* into the flat buffer, in floats */
    size_t numel;
    int decay;      /* AdamW weight decay applies (weight matrices, embeddings; not norms, biases, A_log, D) */
} param_info;

typedef struct {
    param_info *items;
    int n, cap;
    size_t total; /* floats */
} param_layout;

/* Appends a tensor; returns its offset. Offsets are 16-float aligned so every view is 64-byte aligned. */
size_t params_add(param_layout *L, const char *name, int decay, int ndim, const int *shape);
const param_info *params_find(const param_layout *L, const char *name);
void params_free(param_layout *L);

#endif
