/* The public face of src/dist/ (include/ssm.h: ssm_dist_*), for the command line's train. */
#include "dist/dist.h"
#include "ssm.h"

int ssm_dist_start(void) { return dist_start(); }
int ssm_dist_stop(void) { return dist_stop(); }
int ssm_dist_spawn(int gpus, const char *run_dir) { return dist_spawn(gpus, run_dir); }
int ssm_dist_rank(void) { return dist_rank(); }
int ssm_dist_size(void) { return dist_size(); }
