/* Model directories in each format a layer pattern is written in (src/io/model_dir.c): Mamba-1 alone as HF
 * MambaForCausalLM, "af" as LlamaForCausalLM (MistralForCausalLM with a sliding window) under HF Llama's tensor
 * names, any other pattern as our ssm_hybrid config. Each saves and loads back to the same config, the same bits and
 * the same logits; the configs others write load; what we cannot represent is a one-line error. */
#include "io/fileio.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "model.h"
#include "test.h"

#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/ssm_test_formats_XXXXXX";

static ssm_config small(const char *pattern, int n_layer) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 32, c.n_layer = n_layer, c.mamba1.d_state = 4;
    snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", pattern);
    c.attention.n_heads = 4, c.attention.n_kv_heads = 2, c.attention.max_context = 64;
    c.mlp.intermediate_size = 48;
    c.mamba2.d_state = 8, c.mamba2.head_dim = 16, c.mamba2.n_groups = 2, c.mamba2.chunk_size = 4;
    return c;
}

static int file_has(const char *path, const char *needle) {
    size_t n;
    char *text = NULL;
    int found = file_read_all(path, &text, &n) == 0 && text && strstr(text, needle) != NULL;
    free(text);
    return found;
}

/* save, check the format's marks, load back: the same config, bits and logits */
static void round_trip(const char *what, ssm_config c, const char *architecture, const char *tensor) {
    char title[192], sub[PATH_CAP], p[PATH_CAP];
    snprintf(title, sizeof title, "format %s: saves as %s, loads back to the same config, weights and logits", what,
             architecture);
    TEST_BEGIN(title);
    snprintf(sub, sizeof sub, "%s/%s", dir, what);
    ssm_model *m = ssm_model_new(&c, 7);
    EXPECT(m != NULL, "new: %s", ssm_last_error());
    if (!m) {
        TEST_END();
        return;
    }
    EXPECT(ssm_model_save(m, sub) == 0, "save: %s", ssm_last_error());
    path_join(p, sub, "config.json");
    EXPECT(file_has(p, architecture), "config.json does not name %s", architecture);
    path_join(p, sub, "model.safetensors");
    st_file f = {0};
    if (st_open(&f, p) == 0) {
        EXPECT(st_find(&f, tensor) != NULL, "no tensor '%s' in model.safetensors", tensor);
        st_close(&f);
    }
    ssm_model *b = ssm_model_load(sub);
    EXPECT(b != NULL, "load: %s", ssm_last_error());
    if (b) {
        const ssm_config *x = ssm_model_config(m), *y = ssm_model_config(b);
        EXPECT(!strcmp(x->layer_pattern, y->layer_pattern) && x->n_layer == y->n_layer && x->d_model == y->d_model &&
                   x->tie_embeddings == y->tie_embeddings && x->norm_eps == y->norm_eps,
               "shared fields differ: pattern \"%s\" vs \"%s\", %d vs %d layers", x->layer_pattern, y->layer_pattern,
               x->n_layer, y->n_layer);
        if (strchr(x->layer_pattern, 'a'))
            EXPECT(!memcmp(&x->attention, &y->attention, sizeof x->attention), "attention config differs");
        if (strchr(x->layer_pattern, 'f')) EXPECT(!memcmp(&x->mlp, &y->mlp, sizeof x->mlp), "mlp differs");
        if (strchr(x->layer_pattern, 'm')) EXPECT(!memcmp(&x->mamba1, &y->mamba1, sizeof x->mamba1), "mamba1 differs");
        if (strchr(x->layer_pattern, 'M')) EXPECT(!memcmp(&x->mamba2, &y->mamba2, sizeof x->mamba2), "mamba2 differs");
        EXPECT(m->layout.total == b->layout.total && !memcmp(m->w, b->w, sizeof(float) * m->layout.total),
               "weights differ after the round trip");
        int tok[12];
        for (int i = 0; i < 12; i++) tok[i] = (i * 37 + 5) % 256;
        float *la = xmalloc(sizeof(float) * 12 * 256), *lb = xmalloc(sizeof(float) * 12 * 256);
        ssm_state *sa = ssm_state_new(m, 1), *sb = ssm_state_new(b, 1);
        ssm_forward(m, sa, tok, 12, la, 0);
        ssm_forward(b, sb, tok, 12, lb, 0);
        EXPECT(!memcmp(la, lb, sizeof(float) * 12 * 256), "logits differ after the round trip");
        ssm_state_free(sa), ssm_state_free(sb);
        free(la), free(lb);
        ssm_model_free(b);
    }
    ssm_model_free(m);
    TEST_END();
}

/* a config.json written by hand (as other tools write them) is read, or refused with `want` in the message */
static void config_case(const char *what, const char *json, const char *want) {
    char title[192], p[PATH_CAP];
    snprintf(title, sizeof title, "config.json: %s", what);
    TEST_BEGIN(title);
    snprintf(p, sizeof p, "%s/config_case.json", dir);
    file_write_atomic(p, json, strlen(json));
    ssm_config c;
    const int rc = model_config_read(p, &c);
    if (want) EXPECT(rc == -1 && strstr(ssm_last_error(), want), "expected an error with '%s', got rc %d: %s", want, rc,
                     rc ? ssm_last_error() : "");
    else EXPECT(rc == 0, "read: %s", ssm_last_error());
    TEST_END();
}

static const char *llama_heads_json(int heads, int kv_heads, const char *extra) {
    static char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 256, "
             "\"hidden_size\": 32, \"intermediate_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": %d, "
             "\"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-05, \"hidden_act\": \"silu\"%s}",
             heads, kv_heads, extra);
    return buf;
}
static const char *llama_json(const char *extra) { return llama_heads_json(4, 2, extra); }

/* A NemotronHConfig as transformers writes it, with `extra` members appended */
static const char *nemotron_json(const char *pattern, const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"architectures\": [\"NemotronHForCausalLM\"], \"model_type\": \"nemotron_h\", \"vocab_size\": 256, "
             "\"hidden_size\": 32, %s, \"mamba_num_heads\": 4, \"mamba_head_dim\": 16, \"ssm_state_size\": 8, "
             "\"n_groups\": 2, \"conv_kernel\": 4, \"chunk_size\": 64, \"time_step_limit\": [0.0, Infinity], "
             "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8, \"intermediate_size\": 48, "
             "\"mlp_hidden_act\": \"relu2\", \"layer_norm_epsilon\": 1e-05, \"tie_word_embeddings\": false%s}",
             pattern, extra);
    return buf;
}

static void nemotron_h_configs(void) {
    config_case("a NemotronHConfig (hybrid_override_pattern) reads", nemotron_json("\"hybrid_override_pattern\": \"M*M-\"", ""),
                NULL);
    config_case("transformers 5's layers_block_type reads",
                nemotron_json("\"layers_block_type\": [\"mamba\", \"attention\", \"linear_attention\", \"mlp\"]", ""), NULL);
    config_case("NemotronH's MoE layers are refused", nemotron_json("\"hybrid_override_pattern\": \"ME\"", ""),
                "MoE layers");
    char *j = (char *)nemotron_json("\"hybrid_override_pattern\": \"M-\"", "");
    memcpy(strstr(j, "\"relu2\""), "\"gelu2\"", 7); /* the same length, in place */
    config_case("an MLP activation other than relu2 is refused", j, "mlp_hidden_act \"gelu2\"");
    config_case("NemotronH attention biases are refused",
                nemotron_json("\"hybrid_override_pattern\": \"M*\"", ", \"attention_bias\": true"), "attention_bias");
    config_case("NemotronH MLP biases are refused", nemotron_json("\"hybrid_override_pattern\": \"M-\"", ", \"mlp_bias\": true"),
                "mlp_bias");
    config_case("multi-token prediction layers are refused",
                nemotron_json("\"hybrid_override_pattern\": \"M-\"", ", \"num_nextn_predict_layers\": 1"),
                "num_nextn_predict_layers");
    j = (char *)nemotron_json("\"hybrid_override_pattern\": \"M-\"", "");
    memcpy(strstr(j, "\"mamba_head_dim\": 16"), "\"mamba_head_dim\": 12", 20);
    config_case("a Mamba d_inner not a multiple of hidden_size is refused", j, "mamba_num_heads");
    j = (char *)nemotron_json("\"hybrid_override_pattern\": \"M-\"", "");
    memcpy(strstr(j, "1e-05"), "1e-06", 5);
    config_case("a layer_norm_epsilon other than the gated norm's is refused", j, "with Mamba-2 layers is not supported");
    config_case("num_hidden_layers disagreeing with the pattern is refused",
                nemotron_json("\"hybrid_override_pattern\": \"M-\"", ", \"num_hidden_layers\": 3"), "num_hidden_layers 3");
}

/* A NemotronH directory that transformers 5 saved under its own module names (model.*, embedding): the same model. */
static void nemotron_h_model_names(void) {
    TEST_BEGIN("format nemotron_h: transformers 5's model.* tensor names load as the same model");
    ssm_config c = small("Maf", 3);
    c.attention.rope_theta = 0.0f, c.mlp.hidden_act = SSM_MLP_RELU2, c.tie_embeddings = 0;
    char sub[PATH_CAP], p[PATH_CAP];
    snprintf(sub, sizeof sub, "%s/nemotron_model_names", dir);
    ssm_model *m = ssm_model_new(&c, 3);
    EXPECT(m && ssm_model_save(m, sub) == 0, "save: %s", ssm_last_error());
    path_join(p, sub, "model.safetensors");
    st_file f = {0};
    if (m && st_open(&f, p) == 0) {
        st_tensor *t = xcalloc(f.n, sizeof *t);
        char(*names)[160] = xcalloc(f.n, 160);
        for (int i = 0; i < f.n; i++) {
            t[i] = f.tensors[i];
            const char *nm = f.tensors[i].name;
            if (!strcmp(nm, "backbone.embeddings.weight")) snprintf(names[i], 160, "model.embedding.weight");
            else if (!strncmp(nm, "backbone.", 9)) snprintf(names[i], 160, "model.%s", nm + 9);
            else snprintf(names[i], 160, "%s", nm);
            t[i].name = names[i];
        }
        char renamed[PATH_CAP];
        path_join(renamed, sub, "renamed.safetensors");
        const char *keys[] = {"format"}, *values[] = {"pt"};
        EXPECT(st_write(renamed, t, f.n, keys, values, 1) == 0, "write: %s", ssm_last_error());
        st_close(&f);
        free(t), free(names);
        EXPECT(rename(renamed, p) == 0, "rename");
        ssm_model *b = ssm_model_load(sub);
        EXPECT(b != NULL, "load: %s", ssm_last_error());
        if (b) EXPECT(!memcmp(m->w, b->w, sizeof(float) * m->layout.total), "weights differ");
        ssm_model_free(b);
    }
    ssm_model_free(m);
    TEST_END();
}

/* state-spaces/mamba2-* as mamba_ssm saves them: its config.json (d_model, n_layer, ssm_cfg with layer "Mamba2" and
 * mamba_ssm's names, a vocabulary padded to pad_vocab_size_multiple) beside the same tensors: the same model. */
static void state_spaces_mamba2(void) {
    TEST_BEGIN("format mamba2 from state-spaces (mamba_ssm's config.json): the same model, the vocabulary padded");
    ssm_config c = small("M", 2);
    c.mamba2.n_groups = 1, c.mamba2.chunk_size = 256, c.mamba2.d_state = 128, c.mamba2.head_dim = 64;
    c.d_model = 64, c.vocab_size = 256;
    ssm_model *m = ssm_model_new(&c, 11);
    char sub[PATH_CAP], p[PATH_CAP];
    snprintf(sub, sizeof sub, "%s/state_spaces_m2", dir);
    EXPECT(ssm_model_save(m, sub) == 0, "save: %s", ssm_last_error());
    /* mamba2-130m's config.json, at this size: defaults for everything in ssm_cfg but the layer */
    const char *cfg = "{\"d_model\": 64, \"d_intermediate\": 0, \"n_layer\": 2, \"vocab_size\": 250, "
                      "\"ssm_cfg\": {\"layer\": \"Mamba2\"}, \"attn_layer_idx\": [], \"attn_cfg\": {}, "
                      "\"rms_norm\": true, \"residual_in_fp32\": true, \"fused_add_norm\": true, "
                      "\"pad_vocab_size_multiple\": 16, \"tie_embeddings\": true}\n";
    path_join(p, sub, "config.json");
    EXPECT(file_write_atomic(p, cfg, strlen(cfg)) == 0, "write config.json");
    ssm_model *b = ssm_model_load(sub);
    EXPECT(b != NULL, "load: %s", ssm_last_error());
    if (b) {
        const ssm_config *y = ssm_model_config(b);
        EXPECT(!strcmp(y->layer_pattern, "M") && y->vocab_size == 256 && y->mamba2.head_dim == 64 &&
                   y->mamba2.d_state == 128 && y->mamba2.chunk_size == 256,
               "config: pattern %s, vocab %d, head_dim %d", y->layer_pattern, y->vocab_size, y->mamba2.head_dim);
        EXPECT(m->layout.total == b->layout.total && !memcmp(m->w, b->w, sizeof(float) * m->layout.total),
               "weights differ");
        ssm_model_free(b);
    }
    ssm_model_free(m);
    TEST_END();
}

int main(void) {
    CHECK(mkdtemp(dir), "mkdtemp");
    round_trip("mamba", small("m", 2), "MambaForCausalLM", "backbone.layers.1.mixer.in_proj.weight");
    ssm_config llama = small("af", 4);
    llama.tie_embeddings = 0;
    round_trip("llama", llama, "LlamaForCausalLM", "model.layers.1.self_attn.k_proj.weight");
    ssm_config mistral = small("af", 2);
    mistral.attention.sliding_window = 5;
    round_trip("mistral", mistral, "MistralForCausalLM", "model.layers.0.mlp.gate_proj.weight");
    round_trip("hybrid", small("mmaf", 4), "SsmHybridForCausalLM", "backbone.layers.2.mixer.q_proj.weight");
    round_trip("mamba2", small("M", 2), "Mamba2ForCausalLM", "backbone.layers.1.mixer.dt_bias");
    ssm_config m2 = small("M", 2);
    m2.tie_embeddings = 0, m2.mamba2.use_bias = 1, m2.mamba2.use_conv_bias = 0, m2.mamba2.dt_min = 0.01f;
    m2.mamba2.dt_max = 0.5f;
    round_trip("mamba2 untied, biases, a dt limit", m2, "Mamba2ForCausalLM", "lm_head.weight");
    round_trip("hybrid with mamba2", small("Mmaf", 4), "SsmHybridForCausalLM", "backbone.layers.0.mixer.norm.weight");
    state_spaces_mamba2();
    /* NemotronH: Mamba-2, attention without rotary positions, the relu2 MLP; its pattern written out per layer */
    ssm_config nh = small("Maf", 6);
    nh.attention.rope_theta = 0.0f, nh.mlp.hidden_act = SSM_MLP_RELU2;
    round_trip("nemotron_h (tied: lm_head written too)", nh, "\"hybrid_override_pattern\": \"M*-M*-\"", "lm_head.weight");
    nh.tie_embeddings = 0, nh.mamba2.dt_min = 0.001f, nh.n_layer = 4;
    round_trip("nemotron_h untied, a dt limit", nh, "NemotronHForCausalLM", "backbone.layers.3.mixer.dt_bias");
    ssm_config nh_t = small("af", 2);
    nh_t.attention.rope_theta = 0.0f, nh_t.mlp.hidden_act = SSM_MLP_RELU2;
    round_trip("a Transformer in NemotronH's forms", nh_t, "NemotronHForCausalLM", "backbone.layers.1.mixer.up_proj.weight");
    nh.attention.rope_theta = 10000.0f; /* not NemotronH's attention: our own hybrid, its MLP relu2 */
    round_trip("hybrid with a relu2 MLP", nh, "SsmHybridForCausalLM", "backbone.layers.2.mixer.down_proj.weight");
    nemotron_h_model_names();
    round_trip("odd transformer", small("af", 3), "SsmHybridForCausalLM", "backbone.layers.2.mixer.q_proj.weight");

    config_case("a LlamaConfig written by transformers reads", llama_json(""), NULL);
    config_case("a transformers 5 rope_parameters reads", llama_json(", \"rope_parameters\": {\"rope_type\": "
                                                                     "\"default\", \"rope_theta\": 500000.0}"),
                NULL);
    config_case("Mistral's null sliding_window reads", llama_json(", \"sliding_window\": null"), NULL);
    config_case("rope_scaling is refused", llama_json(", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2}"),
                "rope_scaling is not supported");
    config_case("attention biases are refused", llama_json(", \"attention_bias\": true"), "attention_bias");
    config_case("heads not dividing d_model", llama_heads_json(5, 5, ""),
                "does not divide");
    config_case("kv heads not dividing heads", llama_heads_json(4, 3, ""), "n_kv_heads 3 does not divide");
    config_case("mlp biases are refused", llama_json(", \"mlp_bias\": true"), "mlp_bias");
    config_case("a hybrid without its attention object",
                "{\"model_type\": \"ssm_hybrid\", \"vocab_size\": 256, \"hidden_size\": 32, \"num_hidden_layers\": 2, "
                "\"ssm_layer_pattern\": \"ma\", \"mamba1\": {\"state_size\": 4}}",
                "no \"attention\" object");
    config_case("an unknown model_type", "{\"model_type\": \"gpt2\", \"vocab_size\": 256, \"hidden_size\": 32, "
                                         "\"num_hidden_layers\": 2}",
                "model_type \"gpt2\" is not supported");
    /* a Mamba2Config as transformers writes it (time_step_limit's bare Infinity) */
    const char *m2_json = "{\"architectures\": [\"Mamba2ForCausalLM\"], \"model_type\": \"mamba2\", \"vocab_size\": 256, "
                     "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_heads\": 4, \"head_dim\": 16, "
                     "\"n_groups\": 1, \"state_size\": 16, \"expand\": 2, \"conv_kernel\": 4, \"chunk_size\": 256, "
                     "\"time_step_limit\": [0.0, Infinity], \"layer_norm_epsilon\": 1e-05, \"rms_norm\": true, "
                     "\"norm_before_gate\": false, \"tie_word_embeddings\": true, \"hidden_act\": \"silu\"%s}";
    char json[1024];
    snprintf(json, sizeof json, m2_json, "");
    config_case("a Mamba2Config written by transformers reads (time_step_limit [0.0, Infinity])", json, NULL);
    snprintf(json, sizeof json, m2_json, ", \"time_step_max\": Infinity");
    config_case("a bare Infinity outside time_step_limit is refused", json, "unexpected 'I'");
    snprintf(json, sizeof json, m2_json, ", \"norm_before_gate\": true");
    char *nb = strstr(json, "\"norm_before_gate\": false, ");
    memmove(nb, nb + strlen("\"norm_before_gate\": false, "), strlen(nb + strlen("\"norm_before_gate\": false, ")) + 1);
    config_case("norm_before_gate true is refused", json, "norm_before_gate true is not supported");
    snprintf(json, sizeof json, m2_json, "");
    memcpy(strstr(json, "\"num_heads\": 4"), "\"num_heads\": 5", strlen("\"num_heads\": 5"));
    config_case("num_heads disagreeing with head_dim is refused", json, "num_heads 5 * head_dim 16");
    const char *ss = "{\"d_model\": 32, \"n_layer\": 2, \"vocab_size\": 256, \"ssm_cfg\": {\"layer\": \"Mamba2\"%s}%s}";
    snprintf(json, sizeof json, ss, "", ", \"d_intermediate\": 64");
    config_case("mamba_ssm's MLP layers (d_intermediate) are refused", json, "d_intermediate 64");
    snprintf(json, sizeof json, ss, "", ", \"attn_layer_idx\": [1]");
    config_case("mamba_ssm's attention layers are refused", json, "attn_layer_idx");
    snprintf(json, sizeof json, ss, ", \"D_has_hdim\": true", "");
    config_case("a D per channel (D_has_hdim) is refused", json, "D_has_hdim true");
    snprintf(json, sizeof json, ss, ", \"layer\": \"Mamba3\"", "");
    char *dup = strstr(json, "\"layer\": \"Mamba2\", ");
    memmove(dup, dup + strlen("\"layer\": \"Mamba2\", "), strlen(dup + strlen("\"layer\": \"Mamba2\", ")) + 1);
    config_case("an unknown ssm_cfg.layer is refused", json, "ssm_cfg.layer \"Mamba3\" is not supported");
    nemotron_h_configs();
    char cmd[PATH_CAP + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_failures ? 1 : 0;
}
