/* How a flat buffer is split among ranks (see dist.h): the same arithmetic in every implementation. */
#include "dist/dist.h"

void dist_shard(size_t n, int rank, size_t *lo, size_t *hi) {
    const size_t ranks = (size_t)dist_size();
    size_t per = (n + ranks - 1) / ranks;
    per = (per + 15) / 16 * 16; /* shards start on 64 bytes, as the whole buffer does (AdamW's vector loads) */
    *lo = (size_t)rank * per < n ? (size_t)rank * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}
