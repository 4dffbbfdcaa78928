/* Model directories (see model_dir.h): ssm_model_load / ssm_model_save and their config and weights. */
#include "io/model_dir.h"
#include "common.h"
#include "io/fileio.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

/* ---- config.json ----------------------------------------------------------------------------------- */

/* A float field: the shortest decimal that reads back as the same float, always with a '.' or an
 * exponent, since transformers' strict config classes reject 1 where they expect 1.0. */
static void jw_float(json_writer *w, float x) {
    char buf[40];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".e")) strcat(buf, ".0");
    jw_raw(w, buf);
}

/* The file formats a model is written in, by its layer pattern: Mamba-1 alone is HF MambaForCausalLM; Mamba-2 alone
 * HF Mamba2ForCausalLM; attention then SwiGLU MLP, repeated, is HF LlamaForCausalLM (MistralForCausalLM with a sliding
 * window); Mamba-2, attention and MLP layers in NemotronH's forms (attention without rotary positions, the relu2 MLP)
 * are HF NemotronHForCausalLM; any other pattern is our own hybrid config (model_type "ssm_hybrid": the pattern plus
 * each kind's sub-config) with our tensor names. */
typedef enum { FORMAT_MAMBA, FORMAT_MAMBA2, FORMAT_LLAMA, FORMAT_NEMOTRON_H, FORMAT_HYBRID } model_format;

#define NEMOTRON_NORM_EPS 1e-5f /* our Mamba-2 gated norm's (mamba2.c); NemotronH's is layer_norm_epsilon */

/* Whether NemotronH holds this model exactly: its layers are Mamba-2, attention without rotary positions or window,
 * and the relu2 MLP; its Mamba-2 gated norm takes layer_norm_epsilon, ours 1e-5. */
static int nemotron_h_fits(const ssm_config *c) {
    const char *p = c->layer_pattern;
    if (strspn(p, "Maf") != strlen(p) || strspn(p, "M") == strlen(p)) return 0;
    if (strchr(p, 'a') && (c->attention.rope_theta != 0.0f || c->attention.sliding_window)) return 0;
    if (strchr(p, 'f') && c->mlp.hidden_act != SSM_MLP_RELU2) return 0;
    if (strchr(p, 'M') && c->norm_eps != NEMOTRON_NORM_EPS) return 0;
    return 1;
}

static model_format format_of(const ssm_config *c) {
    const char *p = c->layer_pattern;
    if (strspn(p, "m") == strlen(p)) return FORMAT_MAMBA;
    if (strspn(p, "M") == strlen(p)) return FORMAT_MAMBA2;
    if (!strcmp(p, "af") && c->n_layer % 2 == 0 && c->attention.rope_theta != 0.0f && c->mlp.hidden_act == SSM_MLP_SILU)
        return FORMAT_LLAMA;
    if (nemotron_h_fits(c)) return FORMAT_NEMOTRON_H;
    return FORMAT_HYBRID;
}

static const char *mlp_act_name(int act) { return act == SSM_MLP_RELU2 ? "relu2" : "silu"; }

static void write_mamba(json_writer *w, const ssm_config *c) {
    jw_key(w, "architectures"), jw_raw(w, "[\"MambaForCausalLM\"]");
    jw_key(w, "model_type"), jw_string(w, "mamba");
    jw_key(w, "vocab_size"), jw_int(w, c->vocab_size);
    jw_key(w, "pad_vocab_size_multiple"), jw_int(w, 1);
    jw_key(w, "hidden_size"), jw_int(w, c->d_model);
    jw_key(w, "num_hidden_layers"), jw_int(w, c->n_layer);
    jw_key(w, "state_size"), jw_int(w, c->mamba1.d_state);
    jw_key(w, "expand"), jw_int(w, c->mamba1.expand);
    jw_key(w, "intermediate_size"), jw_int(w, c->mamba1.expand * c->d_model);
    jw_key(w, "conv_kernel"), jw_int(w, c->mamba1.d_conv);
    jw_key(w, "time_step_rank"), jw_int(w, c->mamba1.dt_rank);
    jw_key(w, "layer_norm_epsilon"), jw_float(w, c->norm_eps);
    jw_key(w, "use_bias"), jw_raw(w, c->mamba1.use_bias ? "true" : "false");
    jw_key(w, "use_conv_bias"), jw_raw(w, c->mamba1.use_conv_bias ? "true" : "false");
    jw_key(w, "tie_word_embeddings"), jw_raw(w, c->tie_embeddings ? "true" : "false");
    jw_key(w, "residual_in_fp32"), jw_raw(w, "true");
    jw_key(w, "hidden_act"), jw_string(w, "silu");
    jw_key(w, "time_step_init_scheme"), jw_string(w, "random");
    jw_key(w, "time_step_min"), jw_float(w, 0.001f);
    jw_key(w, "time_step_max"), jw_float(w, 0.1f);
    jw_key(w, "time_step_floor"), jw_float(w, 1e-4f);
    jw_key(w, "time_step_scale"), jw_float(w, 1.0f);
    /* false, although our init does rescale out_proj: transformers 5 re-applies that init to the
     * loaded out_proj weights when this is true, silently replacing them */
    jw_key(w, "rescale_prenorm_residual"), jw_raw(w, "false");
    jw_key(w, "initializer_range"), jw_float(w, 0.02f);
    jw_key(w, "bos_token_id"), jw_int(w, 0);
    jw_key(w, "eos_token_id"), jw_int(w, 0);
    jw_key(w, "pad_token_id"), jw_int(w, 0);
    jw_key(w, "use_cache"), jw_raw(w, "true");
    jw_key(w, "ssm_layer_pattern"), jw_string(w, c->layer_pattern);
}

/* A dt limit [lo, hi] as transformers writes it (an infinite bound as a bare Infinity). */
static void write_dt_limit(json_writer *w, const ssm_mamba2_config *m) {
    jw_raw(w, "["), jw_float(w, m->dt_min), jw_raw(w, ", ");
    if (isinf(m->dt_max)) jw_raw(w, "Infinity");
    else jw_float(w, m->dt_max);
    jw_raw(w, "]");
}

/* The Mamba-2 fields, with HF Mamba2Config's names (both the Mamba2 config and our hybrid's sub-object). An infinite
 * limit is written as Python's json writes it, a bare Infinity (which our reader accepts there alone). */
static void write_mamba2_fields(json_writer *w, const ssm_config *c) {
    const ssm_mamba2_config *m = &c->mamba2;
    jw_key(w, "num_heads"), jw_int(w, m->expand * c->d_model / m->head_dim);
    jw_key(w, "head_dim"), jw_int(w, m->head_dim);
    jw_key(w, "n_groups"), jw_int(w, m->n_groups);
    jw_key(w, "state_size"), jw_int(w, m->d_state);
    jw_key(w, "expand"), jw_int(w, m->expand);
    jw_key(w, "conv_kernel"), jw_int(w, m->d_conv);
    jw_key(w, "chunk_size"), jw_int(w, m->chunk_size);
    jw_key(w, "time_step_limit"), write_dt_limit(w, m);
    jw_key(w, "use_bias"), jw_raw(w, m->use_bias ? "true" : "false");
    jw_key(w, "use_conv_bias"), jw_raw(w, m->use_conv_bias ? "true" : "false");
    jw_key(w, "rms_norm"), jw_raw(w, "true");
    jw_key(w, "norm_before_gate"), jw_raw(w, "false");
}

/* HF Mamba2ForCausalLM: a model of Mamba-2 layers alone. */
static void write_mamba2(json_writer *w, const ssm_config *c) {
    jw_key(w, "architectures"), jw_raw(w, "[\"Mamba2ForCausalLM\"]");
    jw_key(w, "model_type"), jw_string(w, "mamba2");
    jw_key(w, "vocab_size"), jw_int(w, c->vocab_size);
    jw_key(w, "hidden_size"), jw_int(w, c->d_model);
    jw_key(w, "num_hidden_layers"), jw_int(w, c->n_layer);
    write_mamba2_fields(w, c);
    jw_key(w, "layer_norm_epsilon"), jw_float(w, c->norm_eps);
    jw_key(w, "tie_word_embeddings"), jw_raw(w, c->tie_embeddings ? "true" : "false");
    jw_key(w, "residual_in_fp32"), jw_raw(w, "true");
    jw_key(w, "hidden_act"), jw_string(w, "silu");
    jw_key(w, "time_step_min"), jw_float(w, 0.001f);
    jw_key(w, "time_step_max"), jw_float(w, 0.1f);
    jw_key(w, "time_step_floor"), jw_float(w, 1e-4f);
    jw_key(w, "rescale_prenorm_residual"), jw_raw(w, "false"); /* as for Mamba-1: transformers would re-init out_proj */
    jw_key(w, "initializer_range"), jw_float(w, 0.1f);
    jw_key(w, "bos_token_id"), jw_int(w, 0);
    jw_key(w, "eos_token_id"), jw_int(w, 0);
    jw_key(w, "pad_token_id"), jw_int(w, 0);
    jw_key(w, "use_cache"), jw_raw(w, "true");
    jw_key(w, "torch_dtype"), jw_string(w, "float32");
}

/* The attention and MLP fields, with HF LlamaConfig's names (both the Llama config and our hybrid's sub-objects). */
static void write_attention_fields(json_writer *w, const ssm_config *c) {
    const ssm_attention_config *a = &c->attention;
    jw_key(w, "num_attention_heads"), jw_int(w, a->n_heads);
    jw_key(w, "num_key_value_heads"), jw_int(w, a->n_kv_heads);
    jw_key(w, "head_dim"), jw_int(w, a->head_dim);
    jw_key(w, "rope_theta"), jw_float(w, a->rope_theta);
    jw_key(w, "max_position_embeddings"), jw_int(w, a->max_context);
    jw_key(w, "attention_bias"), jw_raw(w, "false");
    jw_key(w, "attention_dropout"), jw_float(w, 0.0f);
    if (a->sliding_window) jw_key(w, "sliding_window"), jw_int(w, a->sliding_window);
}

static void write_llama(json_writer *w, const ssm_config *c) {
    const int mistral = c->attention.sliding_window > 0;
    jw_key(w, "architectures"), jw_raw(w, mistral ? "[\"MistralForCausalLM\"]" : "[\"LlamaForCausalLM\"]");
    jw_key(w, "model_type"), jw_string(w, mistral ? "mistral" : "llama");
    jw_key(w, "vocab_size"), jw_int(w, c->vocab_size);
    jw_key(w, "hidden_size"), jw_int(w, c->d_model);
    jw_key(w, "intermediate_size"), jw_int(w, c->mlp.intermediate_size);
    jw_key(w, "num_hidden_layers"), jw_int(w, c->n_layer / 2);
    write_attention_fields(w, c);
    jw_key(w, "hidden_act"), jw_string(w, "silu");
    jw_key(w, "mlp_bias"), jw_raw(w, "false");
    jw_key(w, "rms_norm_eps"), jw_float(w, c->norm_eps);
    jw_key(w, "tie_word_embeddings"), jw_raw(w, c->tie_embeddings ? "true" : "false");
    jw_key(w, "initializer_range"), jw_float(w, 0.02f);
    jw_key(w, "bos_token_id"), jw_int(w, 0);
    jw_key(w, "eos_token_id"), jw_int(w, 0);
    jw_key(w, "use_cache"), jw_raw(w, "true");
    jw_key(w, "torch_dtype"), jw_string(w, "float32");
}

static void write_hybrid(json_writer *w, const ssm_config *c) {
    jw_key(w, "architectures"), jw_raw(w, "[\"SsmHybridForCausalLM\"]");
    jw_key(w, "model_type"), jw_string(w, "ssm_hybrid");
    jw_key(w, "vocab_size"), jw_int(w, c->vocab_size);
    jw_key(w, "hidden_size"), jw_int(w, c->d_model);
    jw_key(w, "num_hidden_layers"), jw_int(w, c->n_layer);
    jw_key(w, "ssm_layer_pattern"), jw_string(w, c->layer_pattern);
    jw_key(w, "rms_norm_eps"), jw_float(w, c->norm_eps);
    jw_key(w, "tie_word_embeddings"), jw_raw(w, c->tie_embeddings ? "true" : "false");
    if (strchr(c->layer_pattern, 'm')) {
        jw_key(w, "mamba1"), jw_begin_object(w);
        jw_key(w, "state_size"), jw_int(w, c->mamba1.d_state);
        jw_key(w, "expand"), jw_int(w, c->mamba1.expand);
        jw_key(w, "conv_kernel"), jw_int(w, c->mamba1.d_conv);
        jw_key(w, "time_step_rank"), jw_int(w, c->mamba1.dt_rank);
        jw_key(w, "use_bias"), jw_raw(w, c->mamba1.use_bias ? "true" : "false");
        jw_key(w, "use_conv_bias"), jw_raw(w, c->mamba1.use_conv_bias ? "true" : "false");
        jw_end_object(w);
    }
    if (strchr(c->layer_pattern, 'M')) {
        jw_key(w, "mamba2"), jw_begin_object(w);
        write_mamba2_fields(w, c);
        jw_end_object(w);
    }
    if (strchr(c->layer_pattern, 'a')) {
        jw_key(w, "attention"), jw_begin_object(w);
        write_attention_fields(w, c);
        jw_end_object(w);
    }
    if (strchr(c->layer_pattern, 'f')) {
        jw_key(w, "mlp"), jw_begin_object(w);
        jw_key(w, "intermediate_size"), jw_int(w, c->mlp.intermediate_size);
        jw_key(w, "hidden_act"), jw_string(w, mlp_act_name(c->mlp.hidden_act));
        jw_end_object(w);
    }
}

/* HF NemotronHForCausalLM (nemotron_h_fits): one HF layer per layer of ours, hybrid_override_pattern M = Mamba-2,
 * '*' = attention, '-' = MLP; the tensor names are ours (the original NemotronH checkpoints' backbone.* names, which
 * transformers 5 renames to model.* as it loads). */
static void write_nemotron_h(json_writer *w, const ssm_config *c) {
    const size_t plen = strlen(c->layer_pattern);
    char *hf = xmalloc((size_t)c->n_layer + 1);
    for (int l = 0; l < c->n_layer; l++) {
        const char k = c->layer_pattern[l % plen];
        hf[l] = k == 'M' ? 'M' : k == 'a' ? '*' : '-';
    }
    hf[c->n_layer] = 0;
    jw_key(w, "architectures"), jw_raw(w, "[\"NemotronHForCausalLM\"]");
    jw_key(w, "model_type"), jw_string(w, "nemotron_h");
    jw_key(w, "vocab_size"), jw_int(w, c->vocab_size);
    jw_key(w, "hidden_size"), jw_int(w, c->d_model);
    jw_key(w, "num_hidden_layers"), jw_int(w, c->n_layer);
    jw_key(w, "hybrid_override_pattern"), jw_string(w, hf);
    free(hf);
    jw_key(w, "layer_norm_epsilon"), jw_float(w, c->norm_eps);
    /* lm_head.weight is always in the file (a copy of the embedding when tied): transformers 5's NemotronH ties
     * nothing (_tied_weights_keys is empty), earlier ones tie it to the same values */
    jw_key(w, "tie_word_embeddings"), jw_raw(w, c->tie_embeddings ? "true" : "false");
    if (strchr(c->layer_pattern, 'M')) {
        const ssm_mamba2_config *m = &c->mamba2;
        jw_key(w, "mamba_num_heads"), jw_int(w, m->expand * c->d_model / m->head_dim);
        jw_key(w, "mamba_head_dim"), jw_int(w, m->head_dim);
        jw_key(w, "ssm_state_size"), jw_int(w, m->d_state);
        jw_key(w, "n_groups"), jw_int(w, m->n_groups);
        jw_key(w, "expand"), jw_int(w, m->expand);
        jw_key(w, "conv_kernel"), jw_int(w, m->d_conv);
        jw_key(w, "chunk_size"), jw_int(w, m->chunk_size);
        jw_key(w, "mamba_hidden_act"), jw_string(w, "silu");
        jw_key(w, "use_conv_bias"), jw_raw(w, m->use_conv_bias ? "true" : "false");
        jw_key(w, "use_bias"), jw_raw(w, m->use_bias ? "true" : "false");
        jw_key(w, "mamba_proj_bias"), jw_raw(w, m->use_bias ? "true" : "false");
        jw_key(w, "time_step_limit"), write_dt_limit(w, m);
        /* transformers' torch path (no mamba_ssm kernels) clamps dt at time_step_min, its kernel path at
         * time_step_limit: the limit's lower bound makes both ours. 0 cannot be written: its init takes the log
         * (of a loaded dt_bias it discards); dt below 1e-9 moves nothing */
        jw_key(w, "time_step_min"), jw_float(w, m->dt_min > 0.0f ? m->dt_min : 1e-9f);
        jw_key(w, "time_step_max"), jw_float(w, 0.1f);
        jw_key(w, "time_step_floor"), jw_float(w, 1e-4f);
    }
    if (strchr(c->layer_pattern, 'a')) {
        const ssm_attention_config *a = &c->attention;
        jw_key(w, "num_attention_heads"), jw_int(w, a->n_heads);
        jw_key(w, "num_key_value_heads"), jw_int(w, a->n_kv_heads);
        jw_key(w, "head_dim"), jw_int(w, a->head_dim);
        jw_key(w, "max_position_embeddings"), jw_int(w, a->max_context);
        jw_key(w, "attention_bias"), jw_raw(w, "false");
        jw_key(w, "attention_dropout"), jw_float(w, 0.0f);
    }
    if (strchr(c->layer_pattern, 'f')) {
        jw_key(w, "intermediate_size"), jw_int(w, c->mlp.intermediate_size);
        jw_key(w, "mlp_hidden_act"), jw_string(w, "relu2");
        jw_key(w, "mlp_bias"), jw_raw(w, "false");
    }
    jw_key(w, "residual_in_fp32"), jw_raw(w, "true");
    jw_key(w, "rescale_prenorm_residual"), jw_raw(w, "false"); /* as for Mamba: transformers would re-init out_proj */
    jw_key(w, "initializer_range"), jw_float(w, 0.02f);
    jw_key(w, "bos_token_id"), jw_int(w, 0);
    jw_key(w, "eos_token_id"), jw_int(w, 0);
    jw_key(w, "pad_token_id"), jw_int(w, 0);
    jw_key(w, "use_cache"), jw_raw(w, "true");
    jw_key(w, "torch_dtype"), jw_string(w, "float32");
}

int model_config_write(const char *path, const ssm_config *c) {
    json_writer w;
    jw_init(&w);
    jw_begin_object(&w);
    switch (format_of(c)) {
    case FORMAT_MAMBA: write_mamba(&w, c); break;
    case FORMAT_MAMBA2: write_mamba2(&w, c); break;
    case FORMAT_LLAMA: write_llama(&w, c); break;
    case FORMAT_NEMOTRON_H: write_nemotron_h(&w, c); break;
    case FORMAT_HYBRID: write_hybrid(&w, c); break;
    }
    jw_end_object(&w);
    jw_raw(&w, "\n");
    int rc = file_write_atomic(path, w.data, w.len);
    jw_free(&w);
    return rc;
}

typedef struct {
    const char *key;
    int *field;
    int required;
} int_field;

/* Reads integer (or boolean, for flags) fields; absent optional ones keep their defaults. */
static int read_ints(const json_value *obj, const int_field *f, int n, int as_bool) {
    for (int i = 0; i < n; i++) {
        long long v;
        int b, r = as_bool ? json_get_bool(obj, f[i].key, &b) : json_get_int(obj, f[i].key, &v);
        if (r < 0) return -1;
        if (r == 1 && f[i].required) return ssm_error("missing \"%s\"", f[i].key);
        if (r == 1) continue;
        if (as_bool) v = b;
        if (v < 0 || v > 1 << 24) return ssm_error("\"%s\" = %lld is out of range", f[i].key, v);
        *f[i].field = (int)v;
    }
    return 0;
}

/* time_step_rank / dt_rank: an integer, or "auto" for ceil(d_model / 16). */
static int read_dt_rank(const json_value *obj, const char *key, int *out) {
    const json_value *v = json_get(obj, key);
    if (!v) return 0;
    if (v->type == JSON_STRING && strcmp(v->string, "auto") == 0) return *out = 0, 0;
    long long r;
    if (json_get_int(obj, key, &r) < 0 || r < 1) return ssm_error("\"%s\" must be a positive integer or \"auto\"", key);
    *out = (int)r;
    return 0;
}

/* HF MambaConfig (transformers): hidden_size, num_hidden_layers, state_size, ... */
static int config_from_hf(const json_value *root, ssm_config *c) {
    const char *type = NULL;
    if (json_get_string(root, "model_type", &type) < 0) return -1;
    if (type && strcmp(type, "mamba") != 0)
        return ssm_error("model_type \"%s\" is not supported (mamba, mamba2, llama, mistral, nemotron_h or ssm_hybrid)",
                         type);
    const int_field ints[] = {{"vocab_size", &c->vocab_size, 1},  {"hidden_size", &c->d_model, 1},
                              {"num_hidden_layers", &c->n_layer, 1}, {"state_size", &c->mamba1.d_state, 0},
                              {"expand", &c->mamba1.expand, 0},            {"conv_kernel", &c->mamba1.d_conv, 0}};
    const int_field flags[] = {{"use_bias", &c->mamba1.use_bias, 0},
                               {"use_conv_bias", &c->mamba1.use_conv_bias, 0},
                               {"tie_word_embeddings", &c->tie_embeddings, 0}};
    if (read_ints(root, ints, 6, 0) || read_ints(root, flags, 3, 1)) return -1;
    if (read_dt_rank(root, "time_step_rank", &c->mamba1.dt_rank)) return -1;
    double eps = c->norm_eps;
    if (json_get_double(root, "layer_norm_epsilon", &eps) < 0) return -1;
    c->norm_eps = (float)eps;
    long long inter;
    if (json_get_int(root, "intermediate_size", &inter) == 0 && inter != (long long)c->mamba1.expand * c->d_model)
        return ssm_error("intermediate_size %lld is not expand * hidden_size = %d", inter, c->mamba1.expand * c->d_model);
    const char *act = NULL;
    if (json_get_string(root, "hidden_act", &act) < 0) return -1;
    if (act && strcmp(act, "silu") != 0) return ssm_error("hidden_act \"%s\" is not supported (only silu)", act);
    const char *pattern = NULL;
    if (json_get_string(root, "ssm_layer_pattern", &pattern) < 0) return -1;
    if (pattern) {
        if (strlen(pattern) >= sizeof c->layer_pattern) return ssm_error("ssm_layer_pattern is too long");
        strcpy(c->layer_pattern, pattern);
    }
    return 0;
}

/* One bound of a dt limit: a JSON number (+-inf from a bare Infinity, see json_parse_file_inf), or the object
 * {"__float__": "Infinity"} (or "-Infinity") that transformers 5.x writes for a float JSON cannot hold. */
static int limit_number(const json_value *v, double *out) {
    if (v->type == JSON_NUMBER) return *out = v->number, 0;
    const json_value *f = json_get(v, "__float__");
    if (!f || v->count != 1 || f->type != JSON_STRING) return -1;
    if (strcmp(f->string, "Infinity") == 0) return *out = INFINITY, 0;
    if (strcmp(f->string, "-Infinity") == 0) return *out = -INFINITY, 0;
    return -1;
}

/* A Mamba-2 dt limit (HF time_step_limit, mamba_ssm's dt_limit) into m: absent, or a list of two numbers. */
static int read_dt_limit(const json_value *lim, const char *what, ssm_mamba2_config *m) {
    if (!lim) return 0;
    double lo, hi;
    if (lim->type != JSON_ARRAY || lim->count != 2 || limit_number(&lim->items[0], &lo) ||
        limit_number(&lim->items[1], &hi))
        return ssm_error("%s must be a list of two numbers", what);
    m->dt_min = (float)lo, m->dt_max = (float)hi;
    return 0;
}

/* mamba_ssm's MambaConfig with ssm_cfg.layer "Mamba2" (state-spaces/mamba2-*): ssm_cfg's names (headdim, ngroups,
 * bias, conv_bias, dt_limit) and mamba_ssm's defaults (d_state 128, headdim 64, chunk_size 256). Its own MLP
 * (d_intermediate > 0) and attention layers (attn_layer_idx) are other kinds than ours: refused. */
static int state_spaces_mamba2(const json_value *root, const json_value *ssm, ssm_config *c) {
    ssm_mamba2_config *m = &c->mamba2;
    strcpy(c->layer_pattern, "M");
    int d_intermediate = 0, has_hdim = 0, rmsnorm = 1, before = 0;
    const int_field outer[] = {{"d_intermediate", &d_intermediate, 0}};
    const json_value *attn = json_get(root, "attn_layer_idx");
    if (read_ints(root, outer, 1, 0)) return -1;
    if (d_intermediate) return ssm_error("d_intermediate %d: mamba_ssm's MLP layers are not supported", d_intermediate);
    if (attn && (attn->type != JSON_ARRAY || attn->count))
        return ssm_error("attn_layer_idx: mamba_ssm's attention layers are not supported (save the model from ssm)");
    const int_field ints[] = {{"d_state", &m->d_state, 0}, {"d_conv", &m->d_conv, 0}, {"expand", &m->expand, 0},
                              {"headdim", &m->head_dim, 0}, {"ngroups", &m->n_groups, 0}, {"chunk_size", &m->chunk_size, 0}};
    const int_field flags[] = {{"bias", &m->use_bias, 0},    {"conv_bias", &m->use_conv_bias, 0},
                               {"D_has_hdim", &has_hdim, 0}, {"rmsnorm", &rmsnorm, 0},
                               {"norm_before_gate", &before, 0}};
    if (read_ints(ssm, ints, 6, 0) || read_ints(ssm, flags, 5, 1)) return -1;
    if (has_hdim || !rmsnorm || before)
        return ssm_error("ssm_cfg: %s is not supported", has_hdim ? "D_has_hdim true" : !rmsnorm ? "rmsnorm false"
                                                                                                 : "norm_before_gate true");
    const json_value *d_ssm = json_get(ssm, "d_ssm"), *lim = json_get(ssm, "dt_limit");
    if (d_ssm && d_ssm->type != JSON_NULL &&
        (d_ssm->type != JSON_NUMBER || d_ssm->number != (double)m->expand * c->d_model))
        return ssm_error("ssm_cfg.d_ssm other than expand * d_model is not supported");
    return read_dt_limit(lim, "ssm_cfg.dt_limit", m);
}

/* The original state-spaces/mamba MambaConfig: d_model, n_layer, vocab_size, ssm_cfg {...}, with the
 * vocabulary padded up to pad_vocab_size_multiple as MambaLMHeadModel does. */
static int config_from_state_spaces(const json_value *root, ssm_config *c) {
    int pad = 8, rms = 1;
    const int_field ints[] = {{"d_model", &c->d_model, 1}, {"n_layer", &c->n_layer, 1}, {"vocab_size", &c->vocab_size, 1},
                              {"pad_vocab_size_multiple", &pad, 0}};
    const int_field flags[] = {{"tie_embeddings", &c->tie_embeddings, 0}, {"rms_norm", &rms, 0}};
    if (read_ints(root, ints, 4, 0) || read_ints(root, flags, 2, 1)) return -1;
    if (!rms) return ssm_error("rms_norm false (LayerNorm) is not supported");
    if (pad > 1 && c->vocab_size % pad) c->vocab_size += pad - c->vocab_size % pad;
    const json_value *ssm = json_get(root, "ssm_cfg");
    if (ssm && ssm->type != JSON_OBJECT) return ssm_error("ssm_cfg must be an object");
    if (ssm) {
        const char *layer = NULL;
        if (json_get_string(ssm, "layer", &layer) < 0) return -1;
        if (layer && !strcmp(layer, "Mamba2")) return state_spaces_mamba2(root, ssm, c);
        if (layer && strcmp(layer, "Mamba1") != 0)
            return ssm_error("ssm_cfg.layer \"%s\" is not supported (Mamba1, Mamba2)", layer);
        const int_field sints[] = {{"d_state", &c->mamba1.d_state, 0}, {"d_conv", &c->mamba1.d_conv, 0}, {"expand", &c->mamba1.expand, 0}};
        const int_field sflags[] = {{"bias", &c->mamba1.use_bias, 0}, {"conv_bias", &c->mamba1.use_conv_bias, 0}};
        if (read_ints(ssm, sints, 3, 0) || read_ints(ssm, sflags, 2, 1) || read_dt_rank(ssm, "dt_rank", &c->mamba1.dt_rank))
            return -1;
    }
    return 0;
}

/* The attention fields (HF LlamaConfig names) of obj into c->attention. A rope_scaling or a rope type other than the
 * default is refused (our rotary positions are the plain ones); rope_parameters (transformers 5) is read too. */
static int read_attention_fields(const json_value *obj, ssm_config *c) {
    ssm_attention_config *a = &c->attention;
    const int_field ints[] = {{"num_attention_heads", &a->n_heads, 1}, {"num_key_value_heads", &a->n_kv_heads, 0},
                              {"head_dim", &a->head_dim, 0}, {"max_position_embeddings", &a->max_context, 0}};
    if (read_ints(obj, ints, 4, 0)) return -1;
    const json_value *sw = json_get(obj, "sliding_window");
    if (sw && sw->type != JSON_NULL) {
        const int_field win[] = {{"sliding_window", &a->sliding_window, 0}};
        if (read_ints(obj, win, 1, 0)) return -1;
    }
    double theta = a->rope_theta;
    if (json_get_double(obj, "rope_theta", &theta) < 0) return -1;
    const json_value *rs = json_get(obj, "rope_scaling"), *rp = json_get(obj, "rope_parameters");
    if (rs && rs->type != JSON_NULL) return ssm_error("rope_scaling is not supported (plain rotary positions only)");
    if (rp && rp->type == JSON_OBJECT) {
        const char *type = NULL;
        if (json_get_string(rp, "rope_type", &type) < 0 || json_get_double(rp, "rope_theta", &theta) < 0) return -1;
        if (type && strcmp(type, "default") != 0)
            return ssm_error("rope_type \"%s\" is not supported (plain rotary positions only)", type);
    }
    a->rope_theta = (float)theta;
    int bias = 0;
    if (json_get_bool(obj, "attention_bias", &bias) < 0) return -1;
    if (bias) return ssm_error("attention_bias true is not supported");
    return 0;
}

static int read_act_silu(const json_value *obj) {
    const char *act = NULL;
    if (json_get_string(obj, "hidden_act", &act) < 0) return -1;
    if (act && strcmp(act, "silu") != 0) return ssm_error("hidden_act \"%s\" is not supported (only silu)", act);
    return 0;
}

/* Our hybrid's MLP activation: "silu" (SwiGLU, the default) or "relu2" */
static int read_mlp_act(const json_value *obj, ssm_config *c) {
    const char *act = NULL;
    if (json_get_string(obj, "hidden_act", &act) < 0) return -1;
    if (!act || !strcmp(act, "silu")) c->mlp.hidden_act = SSM_MLP_SILU;
    else if (!strcmp(act, "relu2")) c->mlp.hidden_act = SSM_MLP_RELU2;
    else return ssm_error("hidden_act \"%s\" is not supported (silu or relu2)", act);
    return 0;
}

/* HF LlamaConfig / MistralConfig: a Transformer, our pattern "af" with two of our layers per HF layer. */
static int config_from_llama(const json_value *root, ssm_config *c) {
    int layers = 0;
    const int_field ints[] = {{"vocab_size", &c->vocab_size, 1}, {"hidden_size", &c->d_model, 1},
                              {"num_hidden_layers", &layers, 1}, {"intermediate_size", &c->mlp.intermediate_size, 1}};
    const int_field flags[] = {{"tie_word_embeddings", &c->tie_embeddings, 0}};
    c->tie_embeddings = 0; /* LlamaConfig's default */
    if (read_ints(root, ints, 4, 0) || read_ints(root, flags, 1, 1) || read_attention_fields(root, c) ||
        read_act_silu(root))
        return -1;
    int mlp_bias = 0;
    if (json_get_bool(root, "mlp_bias", &mlp_bias) < 0) return -1;
    if (mlp_bias) return ssm_error("mlp_bias true is not supported");
    if (layers < 1 || layers > 2048) return ssm_error("num_hidden_layers %d is out of range", layers);
    double eps = 1e-6; /* LlamaConfig's default */
    if (json_get_double(root, "rms_norm_eps", &eps) < 0) return -1;
    c->norm_eps = (float)eps;
    c->n_layer = 2 * layers;
    strcpy(c->layer_pattern, "af");
    return 0;
}

/* The Mamba-2 fields of obj (HF Mamba2Config's names) into c->mamba2; num_heads, when given, must agree. */
static int read_mamba2_fields(const json_value *obj, ssm_config *c) {
    ssm_mamba2_config *m = &c->mamba2;
    const int_field ints[] = {{"state_size", &m->d_state, 0}, {"expand", &m->expand, 0},
                              {"conv_kernel", &m->d_conv, 0}, {"head_dim", &m->head_dim, 0},
                              {"n_groups", &m->n_groups, 0},  {"chunk_size", &m->chunk_size, 0}};
    const int_field flags[] = {{"use_bias", &m->use_bias, 0}, {"use_conv_bias", &m->use_conv_bias, 0}};
    if (read_ints(obj, ints, 6, 0) || read_ints(obj, flags, 2, 1)) return -1;
    long long heads;
    const int r = json_get_int(obj, "num_heads", &heads);
    if (r < 0) return -1;
    if (r == 0 && m->head_dim > 0 && heads * m->head_dim != (long long)m->expand * c->d_model)
        return ssm_error("num_heads %lld * head_dim %d is not expand * hidden_size = %d", heads, m->head_dim,
                         m->expand * c->d_model);
    int before = 0;
    if (json_get_bool(obj, "norm_before_gate", &before) < 0) return -1;
    if (before) return ssm_error("norm_before_gate true is not supported");
    return read_dt_limit(json_get(obj, "time_step_limit"), "\"time_step_limit\"", m);
}

/* HF Mamba2Config: a model of Mamba-2 layers alone. */
static int config_from_mamba2(const json_value *root, ssm_config *c) {
    const int_field ints[] = {{"vocab_size", &c->vocab_size, 1}, {"hidden_size", &c->d_model, 1},
                              {"num_hidden_layers", &c->n_layer, 1}};
    const int_field flags[] = {{"tie_word_embeddings", &c->tie_embeddings, 0}};
    c->tie_embeddings = 0; /* Mamba2Config's default */
    if (read_ints(root, ints, 3, 0) || read_ints(root, flags, 1, 1)) return -1;
    double eps = c->norm_eps;
    if (json_get_double(root, "layer_norm_epsilon", &eps) < 0) return -1;
    c->norm_eps = (float)eps;
    strcpy(c->layer_pattern, "M");
    return read_mamba2_fields(root, c) || read_act_silu(root) ? -1 : 0;
}

/* Our hybrid config: the pattern, the shared fields, and each kind's sub-object (the Mamba-1 one with HF
 * MambaConfig's names, the attention and MLP ones with LlamaConfig's). */
static int config_from_hybrid(const json_value *root, ssm_config *c) {
    const int_field ints[] = {{"vocab_size", &c->vocab_size, 1}, {"hidden_size", &c->d_model, 1},
                              {"num_hidden_layers", &c->n_layer, 1}};
    const int_field flags[] = {{"tie_word_embeddings", &c->tie_embeddings, 0}};
    if (read_ints(root, ints, 3, 0) || read_ints(root, flags, 1, 1)) return -1;
    const char *pattern = NULL;
    if (json_get_string(root, "ssm_layer_pattern", &pattern) < 0) return -1;
    if (!pattern) return ssm_error("missing \"ssm_layer_pattern\"");
    if (strlen(pattern) >= sizeof c->layer_pattern) return ssm_error("ssm_layer_pattern is too long");
    strcpy(c->layer_pattern, pattern);
    double eps = c->norm_eps;
    if (json_get_double(root, "rms_norm_eps", &eps) < 0) return -1;
    c->norm_eps = (float)eps;
    const char *kinds[] = {"mamba1", "attention", "mlp", "mamba2"};
    const char letters[] = {'m', 'a', 'f', 'M'};
    for (int k = 0; k < 4; k++) {
        const json_value *sub = json_get(root, kinds[k]);
        if (!strchr(c->layer_pattern, letters[k])) continue;
        if (!sub || sub->type != JSON_OBJECT)
            return ssm_error("the pattern \"%s\" has '%c' layers but no \"%s\" object", pattern, letters[k], kinds[k]);
        if (k == 0) {
            const int_field m[] = {{"state_size", &c->mamba1.d_state, 0}, {"expand", &c->mamba1.expand, 0},
                                   {"conv_kernel", &c->mamba1.d_conv, 0}};
            const int_field mf[] = {{"use_bias", &c->mamba1.use_bias, 0}, {"use_conv_bias", &c->mamba1.use_conv_bias, 0}};
            if (read_ints(sub, m, 3, 0) || read_ints(sub, mf, 2, 1) ||
                read_dt_rank(sub, "time_step_rank", &c->mamba1.dt_rank))
                return -1;
        } else if (k == 1) {
            if (read_attention_fields(sub, c)) return -1;
        } else if (k == 3) {
            if (read_mamba2_fields(sub, c)) return -1;
        } else {
            const int_field f[] = {{"intermediate_size", &c->mlp.intermediate_size, 1}};
            if (read_ints(sub, f, 1, 0) || read_mlp_act(sub, c)) return -1;
        }
    }
    return 0;
}

/* A key that must be absent, null or false (NemotronH's options we do not implement) */
static int refuse_true(const json_value *obj, const char *key) {
    const json_value *v = json_get(obj, key);
    int b = 0;
    if (!v || v->type == JSON_NULL) return 0;
    if (json_get_bool(obj, key, &b) < 0) return -1;
    return b ? ssm_error("%s true is not supported", key) : 0;
}

/* NemotronH's layer list: hybrid_override_pattern ("M*-" letters), or transformers 5's layers_block_type (names,
 * "linear_attention" / "full_attention" in its latest form) into our pattern, one letter per layer. */
static int nemotron_h_pattern(const json_value *root, ssm_config *c) {
    const char *pat = NULL;
    const json_value *list = json_get(root, "layers_block_type");
    if (json_get_string(root, "hybrid_override_pattern", &pat) < 0) return -1;
    const size_t n = pat ? strlen(pat) : list && list->type == JSON_ARRAY ? list->count : 0;
    if (n == 0) return ssm_error("missing \"hybrid_override_pattern\" (or \"layers_block_type\")");
    if (n >= sizeof c->layer_pattern) return ssm_error("hybrid_override_pattern: %zu layers is too many", n);
    for (size_t i = 0; i < n; i++) {
        const char *name = pat ? NULL : list->items[i].type == JSON_STRING ? list->items[i].string : "";
        const char k = pat ? pat[i] : !strcmp(name, "mamba") || !strcmp(name, "linear_attention") ? 'M'
                                      : !strcmp(name, "attention") || !strcmp(name, "full_attention") ? '*'
                                      : !strcmp(name, "mlp") ? '-' : !strcmp(name, "moe") ? 'E' : '?';
        if (k == 'E')
            return ssm_error("%s: MoE layers ('E', \"moe\") are not supported",
                             pat ? "hybrid_override_pattern" : "layers_block_type");
        if (k != 'M' && k != '*' && k != '-')
            return pat ? ssm_error("hybrid_override_pattern: unknown layer '%c' (M, *, -)", k)
                       : ssm_error("layers_block_type: unknown layer \"%s\"", name);
        c->layer_pattern[i] = k == 'M' ? 'M' : k == '*' ? 'a' : 'f';
    }
    c->layer_pattern[n] = 0;
    long long layers;
    const int r = json_get_int(root, "num_hidden_layers", &layers);
    if (r < 0) return -1;
    if (r == 0 && layers != (long long)n)
        return ssm_error("num_hidden_layers %lld differs from the pattern's %zu layers", layers, n);
    c->n_layer = (int)n;
    /* the shortest period that repeats to the layers (our pattern repeats over n_layer): "MafMaf" reads as "Maf" */
    for (size_t p = 1; p <= n; p++) {
        size_t i = p;
        while (i < n && c->layer_pattern[i] == c->layer_pattern[i % p]) i++;
        if (i == n) {
            c->layer_pattern[p] = 0;
            break;
        }
    }
    return 0;
}

/* HF NemotronHConfig (transformers' configuration_nemotron_h.py, its defaults for absent keys): Mamba-2, attention
 * without rotary positions and the relu2 MLP, each with its own key names; its MoE, multi-token prediction and
 * biased attention or MLP are refused. d_inner is mamba_num_heads * mamba_head_dim (its `expand` is not read by the
 * model), which must be a multiple of hidden_size here. */
static int config_from_nemotron_h(const json_value *root, ssm_config *c) {
    const int_field ints[] = {{"vocab_size", &c->vocab_size, 1}, {"hidden_size", &c->d_model, 1}};
    const int_field flags[] = {{"tie_word_embeddings", &c->tie_embeddings, 0}};
    c->tie_embeddings = 0; /* NemotronHConfig's default */
    if (read_ints(root, ints, 2, 0) || read_ints(root, flags, 1, 1) || nemotron_h_pattern(root, c)) return -1;
    double eps = 1e-5;
    if (json_get_double(root, "layer_norm_epsilon", &eps) < 0) return -1;
    c->norm_eps = (float)eps;
    int mtp = 0;
    const int_field extra[] = {{"num_nextn_predict_layers", &mtp, 0}};
    if (read_ints(root, extra, 1, 0)) return -1;
    if (mtp) return ssm_error("num_nextn_predict_layers %d: multi-token prediction layers are not supported", mtp);
    if (strchr(c->layer_pattern, 'M')) {
        ssm_mamba2_config *m = &c->mamba2;
        int heads = 128;
        *m = (ssm_mamba2_config){.d_state = 128, .d_conv = 4, .expand = 2, .head_dim = 64, .n_groups = 8,
                                 .chunk_size = 128, .dt_min = 0.0f, .dt_max = INFINITY, .use_bias = 0,
                                 .use_conv_bias = 1};
        const int_field mi[] = {{"mamba_num_heads", &heads, 0}, {"mamba_head_dim", &m->head_dim, 0},
                                {"ssm_state_size", &m->d_state, 0}, {"n_groups", &m->n_groups, 0},
                                {"conv_kernel", &m->d_conv, 0}, {"chunk_size", &m->chunk_size, 0}};
        const int_field mf[] = {{"use_bias", &m->use_bias, 0}, {"use_conv_bias", &m->use_conv_bias, 0}};
        if (read_ints(root, mi, 6, 0) || read_ints(root, mf, 2, 1)) return -1;
        const long long d_inner = (long long)heads * m->head_dim;
        if (d_inner == 0 || d_inner % c->d_model)
            return ssm_error("mamba_num_heads * mamba_head_dim = %lld is not a multiple of hidden_size %d (not "
                             "supported: our d_inner is expand * hidden_size)", d_inner, c->d_model);
        m->expand = (int)(d_inner / c->d_model);
        const char *act = NULL;
        if (json_get_string(root, "mamba_hidden_act", &act) < 0) return -1;
        if (act && strcmp(act, "silu") != 0)
            return ssm_error("mamba_hidden_act \"%s\" is not supported (only silu)", act);
        if (c->norm_eps != NEMOTRON_NORM_EPS)
            return ssm_error("layer_norm_epsilon %g with Mamba-2 layers is not supported (their gated norm's is 1e-5)",
                             eps);
        if (read_dt_limit(json_get(root, "time_step_limit"), "\"time_step_limit\"", m)) return -1;
    }
    if (strchr(c->layer_pattern, 'a')) {
        ssm_attention_config *a = &c->attention;
        a->n_heads = 32, a->n_kv_heads = 8, a->head_dim = 128, a->max_context = 4096;
        const int_field ai[] = {{"num_attention_heads", &a->n_heads, 0}, {"num_key_value_heads", &a->n_kv_heads, 0},
                                {"head_dim", &a->head_dim, 0}, {"max_position_embeddings", &a->max_context, 0}};
        if (read_ints(root, ai, 4, 0) || refuse_true(root, "attention_bias")) return -1;
        const json_value *sw = json_get(root, "sliding_window");
        if (sw && sw->type != JSON_NULL) return ssm_error("sliding_window is not supported in NemotronH files");
        a->rope_theta = 0.0f; /* NemotronHAttention: no rotary positions */
    }
    if (strchr(c->layer_pattern, 'f')) {
        c->mlp.intermediate_size = 21504;
        const int_field fi[] = {{"intermediate_size", &c->mlp.intermediate_size, 0}};
        if (read_ints(root, fi, 1, 0) || refuse_true(root, "mlp_bias")) return -1;
        const char *act = NULL;
        if (json_get_string(root, "mlp_hidden_act", &act) < 0) return -1;
        if (act && strcmp(act, "relu2") != 0)
            return ssm_error("mlp_hidden_act \"%s\" is not supported (only relu2)", act);
        c->mlp.hidden_act = SSM_MLP_RELU2;
    }
    return 0;
}

int model_config_read(const char *path, ssm_config *c) {
    json_value *root = json_parse_file_inf(path, "time_step_limit");
    if (!root) return -1;
    ssm_config_default(c); /* HF MambaConfig's defaults for absent optional fields */
    c->mamba1.dt_rank = 0;
    int rc;
    const char *type = NULL;
    if (root->type != JSON_OBJECT) rc = ssm_error("expected a JSON object");
    else if (json_get(root, "d_model") && !json_get(root, "hidden_size")) rc = config_from_state_spaces(root, c);
    else if (json_get_string(root, "model_type", &type) < 0) rc = -1;
    else if (type && (!strcmp(type, "llama") || !strcmp(type, "mistral"))) rc = config_from_llama(root, c);
    else if (type && !strcmp(type, "ssm_hybrid")) rc = config_from_hybrid(root, c);
    else if (type && !strcmp(type, "mamba2")) rc = config_from_mamba2(root, c);
    else if (type && !strcmp(type, "nemotron_h")) rc = config_from_nemotron_h(root, c);
    else rc = config_from_hf(root, c);
    if (rc == 0) rc = ssm_config_resolve(c);
    json_free(root);
    if (rc) { /* the readers leave messages without the file name */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        if (strncmp(msg, path, strlen(path)) != 0) ssm_error("%s: %s", path, msg);
    }
    return rc;
}

/* ---- weights ------------------------------------------------------------------------------------------ */

#define NAME_CAP 160

/* The name a parameter has in the model's file: ours (HF Mamba's backbone.* names, and NemotronH's scheme for the
 * other kinds: backbone.layers.<l>.mixer.<tensor>), or in a Llama file HF Llama's, two of our layers per HF layer
 * (attention at 2i: input_layernorm, self_attn; the MLP at 2i + 1: post_attention_layernorm, mlp). */
static const char *file_name_of(const ssm_config *c, const char *name, char *buf) {
    if (format_of(c) != FORMAT_LLAMA) return name;
    if (!strcmp(name, "backbone.embeddings.weight")) return "model.embed_tokens.weight";
    if (!strcmp(name, "backbone.norm_f.weight")) return "model.norm.weight";
    int l, n = 0;
    if (sscanf(name, "backbone.layers.%d.%n", &l, &n) != 1 || n == 0) return name; /* lm_head.weight */
    const char *rest = name + n;
    const int attn = l % 2 == 0;
    if (!strcmp(rest, "norm.weight"))
        snprintf(buf, NAME_CAP, "model.layers.%d.%s.weight", l / 2, attn ? "input_layernorm" : "post_attention_layernorm");
    else if (!strncmp(rest, "mixer.", 6))
        snprintf(buf, NAME_CAP, "model.layers.%d.%s.%s", l / 2, attn ? "self_attn" : "mlp", rest + 6);
    else
        return name;
    return buf;
}

int model_weights_write(const char *path, const ssm_model *m, const char *meta_key, const char *meta_value) {
    const param_layout *L = &m->layout;
    model_sync_host(m);
    st_tensor *t = xcalloc(L->n + 1, sizeof *t);
    char(*names)[NAME_CAP] = xcalloc(L->n, NAME_CAP);
    int n = L->n;
    for (int i = 0; i < L->n; i++) {
        const param_info *p = &L->items[i];
        t[i].name = (char *)file_name_of(&m->cfg, p->name, names[i]);
        t[i].dtype = ST_F32;
        t[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) t[i].shape[d] = p->shape[d];
        t[i].nbytes = p->numel * sizeof(float);
        t[i].data = m->w + p->offset;
    }
    if (format_of(&m->cfg) == FORMAT_NEMOTRON_H && m->cfg.tie_embeddings) { /* see write_nemotron_h */
        t[n] = t[m->emb];
        t[n++].name = "lm_head.weight";
    }
    const char *keys[] = {"format", meta_key}, *values[] = {"pt", meta_value};
    int rc = st_write(path, t, n, keys, values, meta_key ? 2 : 1);
    free(t);
    free(names);
    return rc;
}

/* Where the weights are: one file or the shards of an index, each memory-mapped. */
typedef struct {
    st_file *files;
    int n;
} weight_files;

static void weight_files_close(weight_files *w) {
    for (int i = 0; i < w->n; i++) st_close(&w->files[i]);
    free(w->files);
    memset(w, 0, sizeof *w);
}

static int weight_files_open(weight_files *w, const char *dir) {
    char p[PATH_CAP];
    memset(w, 0, sizeof *w);
    path_join(p, dir, "model.safetensors");
    if (file_exists(p)) {
        w->files = xcalloc(1, sizeof(st_file));
        if (st_open(&w->files[0], p)) return weight_files_close(w), -1;
        w->n = 1;
        return 0;
    }
    path_join(p, dir, "model.safetensors.index.json");
    if (!file_exists(p)) return ssm_error("%s: no model.safetensors or model.safetensors.index.json", dir);
    json_value *index = json_parse_file(p);
    if (!index) return -1;
    const json_value *map = json_get(index, "weight_map");
    if (!map || map->type != JSON_OBJECT || map->count == 0) {
        json_free(index);
        return ssm_error("%s: missing or empty \"weight_map\"", p);
    }
    /* open each distinct shard once, in order of first mention */
    w->files = xcalloc(map->count, sizeof(st_file));
    for (size_t i = 0; i < map->count; i++) {
        const json_value *f = &map->items[i];
        if (f->type != JSON_STRING || strchr(f->string, '/') || !f->string[0]) {
            ssm_error("%s: weight_map[\"%s\"] must name a shard file in the same directory", p, map->keys[i]);
            goto fail;
        }
        char shard[PATH_CAP];
        path_join(shard, dir, f->string);
        int seen = 0;
        for (int k = 0; k < w->n && !seen; k++) seen = strcmp(w->files[k].path, shard) == 0;
        if (seen) continue;
        if (st_open(&w->files[w->n], shard)) goto fail;
        w->n++;
    }
    /* every tensor the index names must be in the shard it names */
    for (size_t i = 0; i < map->count; i++) {
        char shard[PATH_CAP];
        path_join(shard, dir, map->items[i].string);
        for (int k = 0; k < w->n; k++)
            if (strcmp(w->files[k].path, shard) == 0 && !st_find(&w->files[k], map->keys[i])) {
                ssm_error("%s: tensor '%s' is not in %s as the index says", p, map->keys[i], shard);
                goto fail;
            }
    }
    json_free(index);
    return 0;
fail:
    json_free(index);
    weight_files_close(w);
    return -1;
}

/* The name a NemotronH file may give a tensor of ours instead: transformers 5 names NemotronH's modules model.*
 * where the original checkpoints (and we) say backbone.* (and renames embedding to embeddings as it loads). */
static const char *nemotron_h_alias(const char *name, char *buf) {
    if (strncmp(name, "backbone.", 9) != 0) return NULL;
    snprintf(buf, NAME_CAP, "model.%s", name + 9);
    return buf;
}

/* A tensor by name across the files; the original state-spaces naming is accepted as an alias, and in a NemotronH
 * file transformers 5's model.* names. */
static const st_tensor *weight_find(const weight_files *w, const ssm_config *c, const char *name, const st_file **in) {
    const char *alias = strcmp(name, "backbone.embeddings.weight") == 0 ? "backbone.embedding.weight" : NULL;
    char buf[NAME_CAP];
    const int nemotron = format_of(c) == FORMAT_NEMOTRON_H;
    const char *alias2 = nemotron ? nemotron_h_alias(name, buf) : NULL;
    const char *alias3 = nemotron && alias ? "model.embedding.weight" : NULL;
    for (int k = 0; k < w->n; k++) {
        const st_tensor *t = st_find(&w->files[k], name);
        if (!t && alias) t = st_find(&w->files[k], alias);
        if (!t && alias2) t = st_find(&w->files[k], alias2);
        if (!t && alias3) t = st_find(&w->files[k], alias3);
        if (t) return *in = &w->files[k], t;
    }
    return NULL;
}

static const char *shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Every tensor of the layout present with its exact shape, and no tensor left over (a tied model may carry
 * a redundant lm_head.weight). Reads only the headers: run before the parameters are allocated, so that a
 * config.json that does not match its weights is reported as such, whatever size it asks for. */
static int weights_check(const weight_files *w, const ssm_model *m) {
    const param_layout *L = &m->layout;
    char buf[NAME_CAP];
    for (int i = 0; i < L->n; i++) {
        const param_info *p = &L->items[i];
        const st_file *f = NULL;
        const char *name = file_name_of(&m->cfg, p->name, buf);
        const st_tensor *t = weight_find(w, &m->cfg, name, &f);
        if (!t)
            return ssm_error("%s: missing tensor '%s' (does config.json match these weights?)", w->files[0].path, name);
        int64_t want[PARAM_MAX_DIMS];
        int same = t->ndim == p->ndim;
        for (int d = 0; d < p->ndim; d++) {
            want[d] = p->shape[d];
            if (same && t->shape[d] != p->shape[d]) same = 0;
        }
        if (!same) {
            char a[96], b[96];
            return ssm_error("%s: tensor '%s' has shape %s but config.json implies %s", f->path, t->name,
                             shape_str(a, sizeof a, t->shape, t->ndim), shape_str(b, sizeof b, want, p->ndim));
        }
    }
    for (int k = 0; k < w->n; k++)
        for (int i = 0; i < w->files[k].n; i++) {
            const char *name = w->files[k].tensors[i].name;
            int known = strcmp(name, "backbone.embedding.weight") == 0 ||
                        (m->cfg.tie_embeddings && strcmp(name, "lm_head.weight") == 0);
            const int nemotron = format_of(&m->cfg) == FORMAT_NEMOTRON_H;
            if (nemotron && !strcmp(name, "model.embedding.weight")) known = 1;
            for (int j = 0; j < L->n && !known; j++) {
                const char *ours = file_name_of(&m->cfg, L->items[j].name, buf), *alias;
                char abuf[NAME_CAP];
                known = !strcmp(ours, name) || (nemotron && (alias = nemotron_h_alias(ours, abuf)) && !strcmp(alias, name));
            }
            if (!known) return ssm_error("%s: unexpected tensor '%s' for this config.json", w->files[k].path, name);
        }
    return 0;
}

/* Fills m->w from the checked tensors, converted from F32/F16/BF16; every value must be finite. */
static int weights_read(const weight_files *w, ssm_model *m) {
    const param_layout *L = &m->layout;
    for (int i = 0; i < L->n; i++) {
        const param_info *p = &L->items[i];
        const st_file *f = NULL;
        char buf[NAME_CAP];
        const st_tensor *t = weight_find(w, &m->cfg, file_name_of(&m->cfg, p->name, buf), &f);
        if (st_read_f32(f, t, m->w + p->offset, p->numel)) return -1;
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(m->w[p->offset + k]))
                return ssm_error("%s: tensor '%s' holds a non-finite value (%g) at index %zu", f->path, t->name,
                                 m->w[p->offset + k], k);
    }
    return 0;
}

int ssm_model_save(const ssm_model *m, const char *dir) {
    char p[PATH_CAP];
    if (mkdir(dir, 0777) && errno != EEXIST) return ssm_error("%s: cannot create directory: %s", dir, strerror(errno));
    path_join(p, dir, "model.safetensors");
    if (model_weights_write(p, m, NULL, NULL)) return -1;
    path_join(p, dir, "config.json");
    return model_config_write(p, &m->cfg);
}

/* A run directory (with checkpoint/) is accepted wherever a model directory is; and where a training run
 * died between the two renames of a checkpoint save, DIR.old is the complete checkpoint (see ckpt_save). */
static const char *model_dir_resolve(const char *dir, char *buf) {
    char base[PATH_CAP]; /* without trailing slashes, so that "run/checkpoint/" finds run/checkpoint.old */
    snprintf(base, sizeof base, "%s", dir);
    for (size_t n = strlen(base); n > 1 && base[n - 1] == '/';) base[--n] = 0;
    dir = base;
    char ckpt[PATH_CAP], old[PATH_CAP];
    const char *found = dir_or_old(dir, "config.json", old);
    if (!found && snprintf(ckpt, sizeof ckpt, "%s/checkpoint", dir) < (int)sizeof ckpt)
        found = dir_or_old(ckpt, "config.json", old);
    snprintf(buf, PATH_CAP, "%s", found ? found : dir);
    return found ? buf : NULL; /* NULL: no config.json anywhere (buf names dir for the error) */
}

int ssm_config_load(const char *dir_in, ssm_config *c) {
    char buf[PATH_CAP], p[PATH_CAP];
    model_dir_resolve(dir_in, buf);
    path_join(p, buf, "config.json");
    return model_config_read(p, c);
}

static ssm_model *model_load_from(const char *dir) {
    char p[PATH_CAP];
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ssm_error("%s: no such model directory", dir);
        return NULL;
    }
    ssm_config c;
    path_join(p, dir, "config.json");
    if (model_config_read(p, &c)) return NULL;
    ssm_model *m = model_layout_new(&c);
    if (!m) return NULL;
    weight_files w;
    if (weight_files_open(&w, dir) || weights_check(&w, m) || model_alloc_weights(m) || weights_read(&w, m)) {
        if (w.n) weight_files_close(&w);
        ssm_model_free(m);
        return NULL;
    }
    weight_files_close(&w);
    return m;
}

ssm_model *ssm_model_load(const char *dir_in) {
    char buf[PATH_CAP], p[PATH_CAP];
    for (int attempt = 0;; attempt++) {
        const int found = model_dir_resolve(dir_in, buf) != NULL;
        ssm_model *m = model_load_from(buf);
        /* a live run's checkpoint may be renamed away while it is read (see ckpt_save): look again */
        path_join(p, buf, "config.json");
        if (m || !found || file_exists(p) || attempt == 100) return m;
    }
}
