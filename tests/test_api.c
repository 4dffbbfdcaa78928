/* The public API on its own: this file includes only include/ssm.h, as a user's program would, and
 * trains, saves, loads, scores and samples a small byte model through it. */
#include "ssm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("  %s:%d: ", __FILE__, __LINE__);                                               \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static void count_tokens(int token, void *ctx) {
    (void)token;
    (*(int *)ctx)++;
}

/* Device names: "cuda:N" parses whatever the machine (an index it lacks, or no GPU at all, is another error);
 * a malformed name is "unknown device", one line, on any machine. */
static int test_device_names(void) {
    int bad = 0;
    const char *malformed[] = {"cuda:x", "cuda:-1", "cuda:", "cuda:1x", "cuda: 1", "cuda0", "cuda:99999999999", "gpu"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        const int ok = !ssm_device_available(malformed[i]) && strstr(ssm_last_error(), "unknown device '") &&
                       strstr(ssm_last_error(), malformed[i]) && !strchr(ssm_last_error(), '\n');
        if (!ok) printf("  %s: %s\n", malformed[i], ssm_last_error()), bad++;
    }
    const char *wellformed[] = {"cuda", "cuda:0", "cuda:7"};
    for (size_t i = 0; i < sizeof wellformed / sizeof wellformed[0]; i++)
        if (!ssm_device_available(wellformed[i]) && strstr(ssm_last_error(), "unknown device"))
            printf("  %s was not parsed: %s\n", wellformed[i], ssm_last_error()), bad++;
    if (!ssm_device_available("cpu")) printf("  cpu: %s\n", ssm_last_error()), bad++;
    printf("%s - device names: cuda:N parses on any machine, malformed names are one-line errors\n",
           bad ? "FAIL" : "ok");
    return bad;
}

int main(void) {
    failures += test_device_names();
    char dir[] = "/tmp/ssm_test_api_XXXXXX", data[600], out[600], cmd[700];
    if (!mkdtemp(dir)) return 1;
    snprintf(data, sizeof data, "%s/abc.txt", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    FILE *f = fopen(data, "w");
    for (int i = 0; i < 4000; i++) fputs("abcabd", f);
    fclose(f);

    ssm_config cfg;
    ssm_config_default(&cfg);
    cfg.d_model = 16, cfg.n_layer = 1, cfg.mamba1.d_state = 4;
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.data_path = data, t.out_dir = out, t.batch = 4, t.seq_len = 32, t.quiet = 1, t.eval_every = 40;
    t.optim.steps = 40, t.optim.warmup = 4, t.optim.lr = 1e-2f;
    EXPECT(ssm_train(&t, &cfg) == 0, "ssm_train: %s", ssm_last_error());

    ssm_model *m = ssm_model_load(out); /* a run directory is accepted */
    EXPECT(m != NULL, "ssm_model_load: %s", ssm_last_error());
    if (m) {
        int ids[600];
        for (int i = 0; i < 600; i++) ids[i] = "abcabd"[i % 6];
        double nats = ssm_eval_stream(m, ids, 600, 128, 0) / 599;
        EXPECT(nats < 1.0, "after 40 steps the pattern should cost < 1 nat/byte, got %.3f", nats);
        ssm_sample_options so = {.temperature = 0};
        int made = 0;
        ssm_generate(m, ids, 6, 20, &so, count_tokens, &made);
        EXPECT(made == 20, "ssm_generate made %d tokens, wanted 20", made);
        EXPECT(ssm_model_state_bytes(m, -1) > 0, "no state size");
        ssm_model_free(m);
    }
    EXPECT(ssm_model_load("/nonexistent/model") == NULL && strstr(ssm_last_error(), "/nonexistent/model"),
           "a missing directory should fail with its name, got: %s", ssm_last_error());
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("  could not remove %s\n", dir);
    printf("%s - the public API alone trains, loads, scores and samples a model\n", failures ? "FAIL" : "ok");
    return failures != 0;
}
