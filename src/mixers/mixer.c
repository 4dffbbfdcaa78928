/* The registry of mixer kinds, by layer-pattern letter. */
#include "mixers/mixer.h"

#include <stddef.h>

const mixer_kind *mixer_by_code(char code) {
    static const mixer_kind *const all[] = {&mixer_mamba1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->code == code) return all[i];
    return NULL;
}
