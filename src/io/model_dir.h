/* Model directories: config.json + weights, in Hugging Face MambaForCausalLM form (written and read)
 * or the original state-spaces/mamba form (read). Weights come from model.safetensors or from the
 * shards listed in model.safetensors.index.json, in F32, F16 or BF16. */
#ifndef SSM_MODEL_DIR_H
#define SSM_MODEL_DIR_H

#include "model.h"

/* HF config.json for the model's shape (floats as floats; transformers 5 checks types). */
int model_config_write(const char *path, const ssm_config *c);
/* Reads either config.json format into *c (resolved). One-line errors naming the file. */
int model_config_read(const char *path, ssm_config *c);
/* model.safetensors with the parameters as F32 under their HF names (+ one optional metadata pair). */
int model_weights_write(const char *path, const ssm_model *m, const char *meta_key, const char *meta_value);

#endif
