#!/usr/bin/env python3
"""Builds the scan kernels with parts of their work removed, to bound what a cheaper version of each part could
give (docs/cuda.md, "Limits of this design"). The variants compute wrong results: they are for timing only, never
for training.

    bench/scan_ablation.py OUT      builds OUT/<variant>/bench_cuda_scan for each variant (sm_90 only), then on the
                                    GPU machine: for v in OUT/*/; do echo $v; $v/bench_cuda_scan; done

Variants: base (as shipped), sp (no softplus), put (one bf16 store per step in the backward), comp (no cross-warp fold
and composition, both kernels), red (no dB/dC products or channel sums), all (the four together). Each edit is a
literal replacement in src/backend/cuda/scan.cu; the script stops if the source no longer has the text it edits."""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (variant, old text, new text): each old text must occur exactly once
EDITS = [
    ("sp", "            dtv[i] = softplus_sig_(dtv[i] + bias, sg);\n",
     "            dtv[i] = dtv[i] + bias, sg = 1.0f;\n"),
    ("comp", """                ag[((g * 3 + 0) * W + w) * 32 + lane] = ex2(a2 * sdt);
                ag[((g * 3 + 1) * W + w) * 32 + lane] = s;
                ag[((g * 3 + 2) * W + w) * 32 + lane] = q;
            }
            __syncthreads();""", "            }"),
    ("comp", """#pragma unroll
                for (int v = 0; v < W; v++) // all loads first (independent), then the chains
                    pa[v] = ag[((g * 3 + 0) * W + v) * 32 + lane], ph[v] = ag[((g * 3 + 1) * W + v) * 32 + lane],
                    pq[v] = ag[((g * 3 + 2) * W + v) * 32 + lane];
#pragma unroll
                for (int v = 0; v < W - 1; v++)
                    if (v < w) hc = pa[v] * hc + ph[v];
                // incoming adjoint u: from the next chunk through the warps after this one
                float u = uin[n * 32 + lane];
#pragma unroll
                for (int v = W - 1; v > 0; v--)
                    if (v > w) u = pa[v] * u + pq[v];
                if (w == 0) uout[n * 32 + lane] = pa[0] * u + pq[0];""",
     """                float u = uin[n * 32 + lane];
                if (w == 0) uout[n * 32 + lane] = u;"""),
    ("comp", """                ag[((g * 2 + 0) * W + w) * 32 + lane] = ex2(a2 * sdt);
                ag[((g * 2 + 1) * W + w) * 32 + lane] = s;
            }
            __syncthreads();""", "            }"),
    ("comp", """#pragma unroll
                for (int v = 0; v < W - 1; v++) // all loads first (independent), then the chain
                    pa[v] = ag[((g * 2 + 0) * W + v) * 32 + lane], ph[v] = ag[((g * 2 + 1) * W + v) * 32 + lane];
#pragma unroll
                for (int v = 0; v < W - 1; v++)
                    if (v < w) hc = pa[v] * hc + ph[v];
                if (w == W - 1) cout[n * 32 + lane] = ag[((g * 2 + 0) * W + w) * 32 + lane] * hc + hf[g];""",
     "                if (w == W - 1) cout[n * 32 + lane] = hc;"),
    ("red", """                    rw[i * RED_STRIDE + lane] = gh * dtx[i];              // dB_t, this channel
                    rw[(ITEMS + i) * RED_STRIDE + lane] = dyv[i] * hs[i]; // dC_t, this channel""", ""),
    ("red", "                __syncwarp();\n                // row r", "#if 0\n                // row r"),
    ("red", """                    if (pst) pblk[pok + n * 2 * T] = s;
                }
                __syncwarp();""", """                    if (pst) pblk[pok + n * 2 * T] = s;
                }
#endif"""),
    ("put", """            auto put = [&](int i) {
                const float xv = sx(xs + i * 32);""", """            auto put = [&](int i) {
                dx16[at + (size_t)i * E] = __float2bfloat16_rn(dtv[i] * gB[i] + aw[i] + yr[i]);
            };
            auto put_unused = [&](int i) {
                const float xv = sx(xs + i * 32);"""),
]
VARIANTS = ["base", "sp", "put", "comp", "red", "all"]


def variant_source(src, v):
    for name, old, new in EDITS:
        if v == name or (v == "all" and name != "base"):
            if src.count(old) != 1:
                sys.exit(f"scan_ablation: the edit '{name}' no longer matches src/backend/cuda/scan.cu; update the script")
            src = src.replace(old, new)
    return src


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.abspath(sys.argv[1])
    src = open(os.path.join(ROOT, "src/backend/cuda/scan.cu")).read()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as work:
        for f in files:
            if os.path.isfile(os.path.join(ROOT, f)) and not f.startswith("tests/fixtures/"):
                os.makedirs(os.path.join(work, os.path.dirname(f)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, f), os.path.join(work, f))
        nvcc = ("-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 --default-stream per-thread "
                "-Iinclude -Isrc -MMD -MP")
        for v in VARIANTS:
            with open(os.path.join(work, "src/backend/cuda/scan.cu"), "w") as f:
                f.write(variant_source(src, v))
            print(f"building {v}", flush=True)
            subprocess.run(["make", "-s", f"-j{os.cpu_count()}", 'OPT=-O3 -march=x86-64-v3', f"NVCCFLAGS={nvcc}",
                            "build/gpu/bench_cuda_scan"], cwd=work, check=True)
            os.makedirs(os.path.join(out, v), exist_ok=True)
            shutil.copy2(os.path.join(work, "build/gpu/bench_cuda_scan"), os.path.join(out, v))


if __name__ == "__main__":
    main()
