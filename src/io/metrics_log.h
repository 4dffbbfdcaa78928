/* metrics.jsonl: one JSON object per line, each written whole with one write() so that a kill at any
 * instant leaves at most a torn last line, which a resumed run removes. */
#ifndef SSM_METRICS_LOG_H
#define SSM_METRICS_LOG_H

#include <stddef.h>

typedef struct {
    int fd;
    char path[4096];
} metrics_log;

/* A new, empty log (truncating any file at path). */
int metrics_create(metrics_log *g, const char *path);
/* Continues the log of a run resumed from its checkpoint at `step`: a torn last line, lines that are not
 * JSON objects and entries past `step` (written after that checkpoint) are dropped first, so the file stays
 * valid JSONL without duplicated steps. *dropped (may be NULL) counts the lines removed. */
int metrics_resume(metrics_log *g, const char *path, long step, int *dropped);
/* Appends `line` (a JSON object, without the newline) and its newline in one write. */
int metrics_write(metrics_log *g, const char *line);
void metrics_close(metrics_log *g);

/* A JSON number for metrics: printf's `fmt` of x, or null where x is NaN or infinite (JSON has neither). */
const char *metrics_number(char *buf, size_t cap, const char *fmt, double x);

#endif
