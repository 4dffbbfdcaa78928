/* metrics.jsonl (see metrics_log.h). */
#include "io/metrics_log.h"
#include "common.h"
#include "io/fileio.h"
#include "io/json.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static int log_open(metrics_log *g, const char *path, int flags) {
    snprintf(g->path, sizeof g->path, "%s", path);
    g->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | flags, 0644);
    if (g->fd < 0) return ssm_error("%s: cannot open for writing: %s", path, strerror(errno));
    return 0;
}

int metrics_create(metrics_log *g, const char *path) { return log_open(g, path, O_TRUNC); }

/* A line to keep: a JSON object whose "step" is at most `step`. */
static int line_kept(const char *line, size_t len, long step) {
    json_value *v = json_parse_named(line, len, "metrics.jsonl");
    long long s;
    int keep = v && v->type == JSON_OBJECT && json_get_int(v, "step", &s) == 0 && s <= step;
    json_free(v);
    return keep;
}

int metrics_resume(metrics_log *g, const char *path, long step, int *dropped) {
    int n_dropped = 0;
    if (dropped) *dropped = 0;
    if (file_exists(path)) {
        char *text;
        size_t len, kept = 0;
        if (file_read_all(path, &text, &len)) return -1;
        char *out = xmalloc(len + 1);
        for (size_t at = 0; at < len;) {
            const char *nl = memchr(text + at, '\n', len - at);
            const size_t end = nl ? (size_t)(nl - text) : len; /* no newline: a torn last line */
            if (nl && line_kept(text + at, end - at, step)) {
                memcpy(out + kept, text + at, end - at + 1);
                kept += end - at + 1;
            } else {
                n_dropped++;
            }
            at = end + 1;
        }
        int rc = n_dropped ? file_write_atomic(path, out, kept) : 0;
        free(out);
        free(text);
        if (rc) return -1;
    }
    if (dropped) *dropped = n_dropped;
    return log_open(g, path, 0);
}

int metrics_write(metrics_log *g, const char *line) {
    const size_t n = strlen(line);
    char *buf = xmalloc(n + 1); /* the line and its newline in one write */
    memcpy(buf, line, n);
    buf[n] = '\n';
    const int rc = file_write_fully(g->fd, buf, n + 1);
    const int err = errno;
    free(buf);
    return rc ? ssm_error("%s: write failed: %s", g->path, strerror(err)) : 0;
}

void metrics_close(metrics_log *g) {
    if (g->fd >= 0) close(g->fd);
    g->fd = -1;
}

const char *metrics_number(char *buf, size_t cap, const char *fmt, double x) {
    if (isfinite(x)) snprintf(buf, cap, fmt, x);
    else snprintf(buf, cap, "null");
    return buf;
}
