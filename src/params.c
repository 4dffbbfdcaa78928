/* Parameter layout bookkeeping (see params.h). */
#include "params.h"
#include "common.h"

#include <string.h>

size_t params_add(param_layout *L, const char *name, int decay, int ndim, const int *shape) {
    CHECK(ndim >= 1 && ndim <= PARAM_MAX_DIMS, "bad ndim %d for %s", ndim, name);
    CHECK(strlen(name) < sizeof L->items[0].name, "parameter name too long: %s", name);
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 32;
        param_info *grown = realloc(L->items, sizeof(param_info) * L->cap);
        CHECK(grown, "out of memory");
        L->items = grown;
    }
    param_info *p = &L->items[L->n++];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->decay = decay;
    p->offset = (L->total + 15) & ~(size_t)15;
    L->total = p->offset + p->numel;
    return p->offset;
}

const param_info *params_find(const param_layout *L, const char *name) {
    for (int i = 0; i < L->n; i++)
        if (strcmp(L->items[i].name, name) == 0) return &L->items[i];
    return NULL;
}

void params_free(param_layout *L) {
    free(L->items);
    memset(L, 0, sizeof *L);
}
