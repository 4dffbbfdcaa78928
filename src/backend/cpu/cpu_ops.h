/* The CPU kernels (the .c files of src/backend/cpu): backend_cpu's ops and the tests' reference. Only src/backend
 * and the tests include this: the model and the mixers reach a kernel through their backend (be->scan_fwd), so a
 * call that forgets `be->` does not compile, where it used to run CPU code on GPU memory. Each op of ops_list.h is
 * cpu_<name> here, with the shapes and semantics documented there. */
#ifndef SSM_CPU_OPS_H
#define SSM_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/host_bf16.h"
#include "ops/ops.h" /* scan_args, scan_grads */

#define OP(ret, name, params, args, group) ret cpu_##name params;
#include "backend/ops_list.h"
#undef OP

/* The scan's plain sequential definition, for tests: cpu_softplus_bias_fwd, then one channel at a time with scalar
 * exp, then cpu_gate_fwd. */
void cpu_scan_fwd_ref(const scan_args *s, float *out, float *h);
/* The two ops the scan fuses, on their own for that definition: dt = softplus(pre + bias) (torch's threshold 20), in
 * place over [rows, E]; out = y * silu(z), y dense rows of E (out may be y), z rows with stride ldz. */
void cpu_softplus_bias_fwd(float *dt, const float *bias, int rows, int E);
void cpu_gate_fwd(float *out, const float *y, const float *z, int ldz, int rows, int E);

/* Mamba-2's SSD as its plain sequential recurrence (ssd_args in ops.h), for tests: what ssd_fwd's chunked algorithm
 * must equal. */
void cpu_ssd_fwd_ref(const ssd_args *s, float *y, float *state);
/* The op ssd_fwd with a float32 y (cpu_ssd_fwd, the op, rounds this one's output where y is bf16) */
void cpu_ssd_fwd_f32(const ssd_args *s, float *y, float *state);
/* ssd_bwd as the reverse sequential recurrence (states recomputed from checkpoints): what the chunked ssd_bwd must
 * equal. */
void cpu_ssd_bwd_ref(const ssd_args *s, const ssd_grads *gr, const float *dy);

/* Attention's scalar definition, one query row at a time (attention.c), for tests: what attn_fwd and attn_bwd, which
 * run the tiled kernels below, must equal. Same operands as the ops. */
void cpu_attn_fwd_ref(const attn_args *a, mat o);
void cpu_attn_bwd_ref(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv);
/* The float32 tiled kernels behind attn_fwd and attn_bwd (attention_tiled.c): o [B*T, ldo]; dq, dk, dv rows of ldd. */
void cpu_attn_fwd_tiled(const attn_args *a, float *o, int ldo);
void cpu_attn_bwd_tiled(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                        float *dk, float *dv, int ldd);

#endif
