/* Which build of ssm this process runs (dist.h: dist_build_hash), compared between ranks at start-up. */
#include "dist/dist.h"

#include <stdint.h>
#include <stdio.h>

/* This build: a hash of the running executable's bytes (FNV-1a), so that ranks on machines with copies of
 * different builds (other sources, compilers or -march=native) are told apart; two ranks whose arithmetic
 * differs would let their weights drift apart bit by bit. */
uint64_t dist_build_hash(void) {
    uint64_t h = 0xcbf29ce484222325ull;
    FILE *f = fopen("/proc/self/exe", "rb");
    if (!f) return 0; /* no /proc: nothing to compare (ranks without it all answer 0) */
    unsigned char buf[1 << 16];
    for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
    fclose(f);
    return h;
}
