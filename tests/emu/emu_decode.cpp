/* The fused decode kernels (src/backend/cuda/decode_mamba1.cu, decode_mamba2.cu, decode_transformer.cu), run by the
 * emulator (emu.h) on the CPU as a cooperative launch of EMU_SMS blocks, against the library's op-by-op decode step on
 * the CPU (ssm_step): the same model and bytes, several steps (the states carried), logits compared at every step
 * (and the Mamba layers' scan or SSD states: a fresh model's logits barely see dt).
 * Mamba-1 and Mamba-2 stacks; weights float32, bf16 (the CPU's bf16 decode copy on both sides) and int8 with row
 * scales (the CPU's int8 copy); batches 1 to 5 (the FFMA form, within 2e-5 of the logits' scale) and 12 to 64 (the
 * tensor-core form, whose bf16 activations put it within 8e-3); odd sizes, groups, biases or none, a dt limit.
 * Transformer stacks (attention and MLP layers in any order): grouped-query heads, rotary positions or none, a sliding
 * window, SwiGLU or relu2, states prefilled op by op so that a step's keys span several splits (and, past 8192, longer
 * runs a split). Built and run by tests/emu/run.sh. */
#include "backend/cuda/context.h" /* (C++ names, as context.cu defines them) */
extern "C" {
#include "common.h"
#include "model.h"
#include "ops/ops_cuda.h"
}

#include <vector>

/* what decode_mamba1.cu asks of the CUDA backend's context: here, host memory as it is */
static cuda_ctx emu_ctx;
cuda_ctx *cuda_ctx_now(void) { return &emu_ctx; }
const void *cuda_ctx_table(cuda_ctx *, const void *host, size_t) { return host; }

static int failures;

/* kind 'm' (Mamba-1: dim = dt_rank) or 'M' (Mamba-2: dim = head_dim, groups; dt_max > 0: a time_step_limit), or
 * 't' (a Transformer: dim = head_dim, the layers of pattern, d_state the MLP's width; prefill positions first) */
struct shape {
    char kind;
    int d_model, n_layer, d_state, dim, B, bias, conv_bias, wt /* 0 float32, 1 bf16, 2 int8 */, steps, groups;
    float dt_max;
    const char *pattern;
    int heads, kv_heads, window, relu2, prefill;
    float theta;
};

static void run_case(int index, const shape &sh) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = sh.d_model, c.n_layer = sh.n_layer;
    if (sh.kind == 't') {
        c.attention.n_heads = sh.heads, c.attention.n_kv_heads = sh.kv_heads, c.attention.head_dim = sh.dim;
        c.attention.rope_theta = sh.theta, c.attention.sliding_window = sh.window;
        c.mlp.intermediate_size = sh.d_state, c.mlp.hidden_act = sh.relu2 ? SSM_MLP_RELU2 : SSM_MLP_SILU;
    } else if (sh.kind == 'm') {
        c.mamba1.d_state = sh.d_state, c.mamba1.dt_rank = sh.dim;
        c.mamba1.use_bias = sh.bias, c.mamba1.use_conv_bias = sh.conv_bias;
    } else {
        c.mamba2.d_state = sh.d_state, c.mamba2.head_dim = sh.dim, c.mamba2.n_groups = sh.groups;
        c.mamba2.use_bias = sh.bias, c.mamba2.use_conv_bias = sh.conv_bias;
        if (sh.dt_max > 0) c.mamba2.dt_min = 0.002f, c.mamba2.dt_max = sh.dt_max;
    }
    if (sh.kind == 't')
        snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", sh.pattern);
    else
        snprintf(c.layer_pattern, sizeof c.layer_pattern, "%c", sh.kind);
    if (ssm_config_resolve(&c)) {
        fprintf(stderr, "config: %s\n", ssm_last_error());
        exit(2);
    }
    ssm_model *m = ssm_model_new(&c, 1234 + index);
    if (sh.bias) { /* the reference leaves linear biases at zero: give them values, so that they count */
        rng_t rng = {99};
        for (int i = 0; i < m->layout.n; i++)
            if (strstr(m->layout.items[i].name, "proj.bias"))
                for (size_t k = 0; k < m->layout.items[i].numel; k++)
                    m->w[m->layout.items[i].offset + k] = 0.1f * (2.0f * rng_uniform(&rng) - 1.0f);
    }
    if (sh.wt == 1) ssm_model_use_bf16(m);
    if (sh.wt == 2 && ssm_model_use_int8(m)) {
        fprintf(stderr, "use_int8: %s\n", ssm_last_error());
        exit(2);
    }
    const int B = sh.B, V = c.vocab_size;
    /* the reference in groups of at most 16 sequences, the most the CPU decodes on its bf16 or int8 copy */
    const int groups = (B + 15) / 16;
    std::vector<ssm_state *> ref(groups);
    const long context = sh.kind == 't' ? sh.prefill + sh.steps : 0; /* (an attention cache of just that) */
    for (int q = 0; q < groups; q++)
        ref[q] = ssm_state_new_ctx(m, (B - 16 * q) < 16 ? B - 16 * q : 16, context);
    ssm_state *fused = ssm_state_new_ctx(m, B, context);
    if (sh.prefill) { /* the same positions into both states by the op-by-op forward */
        std::vector<int> pre((size_t)B * sh.prefill);
        std::vector<float> last((size_t)B * V);
        for (size_t i = 0; i < pre.size(); i++)
            pre[i] = (int)((13 * i + 7 * index) % 256);
        int rc = ssm_forward(m, fused, pre.data(), sh.prefill, last.data(), 1);
        for (int q = 0; q < groups; q++)
            rc |= ssm_forward(m, ref[q], pre.data() + (size_t)16 * q * sh.prefill, sh.prefill, last.data(), 1);
        if (rc) {
            fprintf(stderr, "prefill: %s\n", ssm_last_error());
            exit(2);
        }
    }
    std::vector<float> lr((size_t)B * V), lf((size_t)B * V), work(decode_fused_work_floats(m, B));
    std::vector<m1_decode_layer> layers(c.n_layer);
    std::vector<int> tok(B);
    double worst = 0, worst_state = 0;
    for (int step = 0; step < sh.steps; step++) {
        for (int b = 0; b < B; b++)
            tok[b] = (37 * step + 101 * b + index) % 256;
        for (int q = 0; q < groups; q++)
            if (ssm_step(m, ref[q], tok.data() + 16 * q, lr.data() + (size_t)16 * q * V)) {
                fprintf(stderr, "ssm_step: %s\n", ssm_last_error());
                exit(2);
            }
        model_canonicalize(m, fused);
        decode_fused_call call;
        decode_fused_args(m, fused, tok.data(), lf.data(), work.data(), &call);
        const int rc = call.kind == DECODE_FUSED_T    ? decode_transformer_cuda(&call.t)
                       : call.kind == DECODE_FUSED_M2 ? decode_mamba2_cuda(&call.m2)
                                                      : decode_mamba1_cuda(&call.m1);
        decode_fused_call_free(&call);
        if (rc != 0) {
            printf("not ok - case %d: the kernel declined the sizes\n", index);
            failures++;
            return;
        }
        double scale = 1e-6, err = 0;
        for (size_t i = 0; i < lr.size(); i++)
            scale = fmax(scale, fabs(lr[i]));
        for (size_t i = 0; i < lr.size(); i++)
            err =
                std::isfinite(lf[i]) ? fmax(err, fabs((double)lf[i] - lr[i]) / scale) : INFINITY; /* (fmax drops NaN) */
        if (!(err <= (B > 8 ? 8e-3 : 2e-5))) {
            printf("not ok - case %d step %d: logits differ by %.3g of their scale\n", index, step, err);
            failures++;
            return;
        }
        worst = fmax(worst, err);
        /* the scan (Mamba-1) or SSD (Mamba-2) states too: the logits of a freshly made model barely see dt (a wrong
         * dt_proj row moves them less than the tensor-core form's tolerance), the states follow it. Per sequence a
         * layer's state is its conv state (cs floats), then this one (ms) */
        if (sh.kind != 't') {
            const bool m1 = sh.kind == 'm';
            const int E = (m1 ? c.mamba1.expand : c.mamba2.expand) * c.d_model,
                      N = m1 ? c.mamba1.d_state : c.mamba2.d_state;
            const int Cd = m1 ? E : E + 2 * c.mamba2.n_groups * N; /* the conv's channels: x (Mamba-2: x | B | C) */
            const int cs = Cd * ((m1 ? c.mamba1.d_conv : c.mamba2.d_conv) - 1), ms = E * N;
            double sscale = 1e-30, serr = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int l = 0; l < c.n_layer; l++)
                    for (int b = 0; b < B; b++) {
                        const ssm_state *r = ref[b / 16];
                        const float *hf = fused->data + fused->layer_off[l] + (size_t)B * cs + (size_t)b * ms;
                        const float *hr = r->data + r->layer_off[l] + (size_t)r->n_seq * cs + (size_t)(b % 16) * ms;
                        for (int i = 0; i < ms; i++)
                            if (pass == 0)
                                sscale = fmax(sscale, fabs(hr[i]));
                            else
                                serr =
                                    std::isfinite(hf[i]) ? fmax(serr, fabs((double)hf[i] - hr[i]) / sscale) : INFINITY;
                    }
            if (!(serr <= (B > 8 ? 1e-2 : 1e-5))) {
                printf("not ok - case %d step %d: %s states differ by %.3g of their scale\n", index, step,
                       m1 ? "scan" : "SSD", serr);
                failures++;
                return;
            }
            worst_state = fmax(worst_state, serr);
        }
    }
    const char *wts = sh.wt == 1 ? ", bf16 weights" : sh.wt == 2 ? ", int8 weights" : "";
    char states[48] = "";
    if (sh.kind != 't')
        snprintf(states, sizeof states, ", %s states within %.2g", sh.kind == 'm' ? "scan" : "SSD", worst_state);
    if (sh.kind == 't')
        printf("ok - emulated fused decode: Transformer \"%s\", d_model %d x %d, %d heads of %d, %d kv, rope %g, "
               "window %d, %s %d, B %d%s, %d prefilled, %d steps (logits within %.2g)\n",
               sh.pattern, sh.d_model, sh.n_layer, sh.heads, sh.dim, sh.kv_heads, sh.theta, sh.window,
               sh.relu2 ? "relu2" : "SwiGLU", sh.d_state, sh.B, wts, sh.prefill, sh.steps, worst);
    else
        printf("ok - emulated fused decode: %s, d_model %d x %d, d_state %d, %s %d, B %d%s%s%s, %d steps (logits "
               "within %.2g%s)\n",
               sh.kind == 'm' ? "Mamba-1" : "Mamba-2", sh.d_model, sh.n_layer, sh.d_state,
               sh.kind == 'm' ? "dt_rank" : "head_dim", sh.dim, sh.B, sh.bias ? ", biases" : "",
               sh.conv_bias ? "" : ", no conv bias", wts, sh.steps, worst, states);
    for (ssm_state *r : ref)
        ssm_state_free(r);
    ssm_state_free(fused);
    ssm_model_free(m);
}

int main(int argc, char **argv) {
    const shape cases[] = {
        {'m', 64, 2, 16, 4, 1, 0, 1, 0, 6},
        {'m', 64, 3, 16, 4, 3, 0, 1, 1, 5},
        {'m', 32, 2, 12, 3, 2, 1, 0, 0, 5},
        {'m', 48, 1, 16, 8, 5, 1, 1, 1, 4},
        {'m', 40, 2, 32, 5, 1, 0, 1, 0, 4},
        {'m', 64, 2, 16, 4, 2, 1, 1, 2, 5},
        {'m', 32, 1, 8, 2, 1, 0, 1, 2, 4},
        /* 9 to 64 sequences: the tensor-core form, activations in bf16 (the CPU's are float32: 8e-3 of the scale) */
        {'m', 64, 2, 16, 4, 12, 1, 1, 1, 4},
        {'m', 32, 2, 16, 2, 20, 0, 1, 2, 3},
        {'m', 48, 1, 12, 3, 40, 1, 0, 1, 3},
        {'m', 64, 1, 16, 4, 64, 0, 1, 1, 2},
        /* dt_rank a multiple of 8 (dt's row read 8 values at once), d_state past 16 (more lanes a channel) */
        {'m', 64, 1, 32, 16, 24, 1, 1, 2, 2},
        {'m', 48, 2, 20, 8, 16, 0, 1, 1, 3},
        {'m', 32, 1, 10, 2, 12, 0, 1, 1, 3}, /* (d_state not a multiple of 4: the states one at a time) */
        /* Mamba-2: heads of 16 in 1, 2 or 4 groups, d_state 16 to 64 (more than a warp's lanes) and 160 (the SSD
         * step's columns in two runs of 128, the second short), a dt limit */
        {'M', 64, 2, 32, 16, 1, 0, 1, 0, 5, 2},
        {'M', 64, 2, 48, 16, 3, 1, 1, 1, 4, 1, 0.05f},
        {'M', 32, 2, 64, 8, 2, 0, 0, 2, 4, 4},
        {'M', 32, 1, 160, 8, 2, 0, 1, 0, 3, 1},
        {'M', 64, 1, 16, 32, 20, 1, 1, 1, 3, 2},
        {'M', 32, 2, 32, 16, 40, 0, 1, 2, 2, 1},
        /* Transformers (kind, d_model, layers, MLP width, head_dim, B, -, -, weights, steps, -, -, pattern, heads,
         * kv heads, window, relu2, prefill, rope_theta): keys past 32 (several splits), beyond the window */
        {'t', 64, 4, 64, 16, 1, 0, 0, 0, 4, 0, 0, "af", 4, 4, 0, 0, 70, 10000.0f},
        {'t', 64, 3, 96, 16, 3, 0, 0, 1, 4, 0, 0, "aaf", 4, 2, 24, 1, 40, 0.0f},
        {'t', 64, 4, 64, 32, 5, 0, 0, 2, 3, 0, 0, "af", 4, 1, 40, 0, 75, 10000.0f},
        {'t', 32, 2, 32, 16, 2, 0, 0, 0, 36, 0, 0, "fa", 2, 1, 0, 1, 0, 10000.0f},
        {'t', 64, 4, 64, 32, 4, 0, 0, 1, 3, 0, 0, "afaf", 4, 2, 50, 0, 97, 500.0f},
        {'t', 32, 2, 32, 16, 1, 0, 0, 0, 2, 0, 0, "af", 2, 1, 0, 0, 8200, 10000.0f},
        /* head_dim 64 (two keys at once in the splits' value sums) and 48 (lanes past it idle) */
        {'t', 128, 2, 64, 64, 2, 0, 0, 1, 3, 0, 0, "af", 2, 1, 0, 0, 100, 10000.0f},
        {'t', 96, 2, 64, 48, 1, 0, 0, 0, 3, 0, 0, "fa", 2, 2, 0, 0, 45, 10000.0f},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++)
        if (argc < 2 || atoi(argv[1]) == i) run_case(i, cases[i]);
    return failures ? 1 : 0;
}
