/* Softmax cross-entropy fused with its gradient, and the argmax accuracy of the same logits (CPU). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

void cpu_xent_fwd_bwd(double *sum, int *count, float *dlogits, const float *logits, const int *targets, int rows, int V,
                      float scale) {
    double total = 0;
    int n = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, n)
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * V;
        float *d = dlogits ? dlogits + (size_t)r * V : 0;
        if (targets[r] < 0) {
            if (d)
                for (int v = 0; v < V; v++) d[v] = 0;
            continue;
        }
        float mx = l[0];
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        double z = 0;
        for (int v = 0; v < V; v++) z += exp((double)(l[v] - mx));
        double lse = mx + log(z);
        total += lse - l[targets[r]];
        n++;
        if (d) {
            for (int v = 0; v < V; v++) d[v] = (float)exp(l[v] - lse) * scale;
            d[targets[r]] -= scale;
        }
    }
    if (sum) *sum = total;
    if (count) *count = n;
}

void cpu_argmax_hits(int *hits, const float *logits, const int *targets, int rows, int V) {
    int n = 0;
#pragma omp parallel for schedule(static) reduction(+ : n)
    for (int r = 0; r < rows; r++) {
        if (targets[r] < 0) continue;
        const float *l = logits + (size_t)r * V;
        int best = 0; /* the first of equal maxima, as torch.argmax: a uniform row predicts id 0, not every id */
        for (int v = 1; v < V; v++)
            if (l[v] > l[best]) best = v;
        n += best == targets[r];
    }
    *hits = n;
}
