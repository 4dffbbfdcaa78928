# ssm: byte-level state space language models in C.
#   make          build build/ssm and build/libssm.a
#   make test     build and run every test (tests/run_tests.sh)
#   make data     download tinyshakespeare and enwik8 into data/ (checksummed)
#   make train    build, fetch tinyshakespeare, train the default model and sample from it
#   make cuda     build the CUDA kernels (src/backend/cuda, when nvcc is found) and their GPU tests
#   make fuzz     build the libFuzzer harnesses tests/fuzz/fuzz_*.c into build/fuzz/ (needs clang, and
#                 libomp-dev for fuzz_checkpoint; tests/fuzz/run.sh SECONDS runs them)
#   make MPI=1    insist on MPI (data-parallel training: mpirun -np N build/ssm train ...); MPI=0 builds without;
#                 by default it is built where OpenMPI's development files are found
#   make check-sanitize  build build/asan/ssm (CPU-only, ASan + UBSan) and run tests/test_cli*.sh with it
.DEFAULT_GOAL := all
CC      ?= cc
OPT     ?= -O3 -march=native
# everything but the optimization level, shared by the normal and the sanitizer build
# -Wno-psabi: without AVX-512, GCC notes that returning src/backend/cpu/vec.h's 64-byte vectors changes the ABI; they
# never cross one (static functions only), and the note escapes a pragma (it fires in GCC's split-off copies)
BASE_CFLAGS := -ffp-contract=fast -std=c11 -D_GNU_SOURCE -fopenmp -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers -Wno-psabi -Iinclude -Isrc -MMD -MP
CFLAGS  += $(OPT) $(BASE_CFLAGS)
# Prefer the OpenMP build of OpenBLAS so BLAS threads and our OpenMP threads share one pool.
BLASDIR := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp))
ifneq ($(BLASDIR),)
BLAS    := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas
else
BLAS    := -lopenblas
endif
CPU_LDLIBS := $(BLAS) -lm -fopenmp
LDLIBS  += $(CPU_LDLIBS)

# ---- MPI: data-parallel training over processes (src/dist/dist_mpi.c, docs/distributed.md), built where OpenMPI's
# development files are found (MPI=1 insists, MPI=0 builds without). Only the normal build links it: the sanitizer
# and fuzz builds keep the one-process src/dist/dist_single.c (what a build without MPI runs).
MPI       ?= auto
ifneq ($(MPI),0)
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
ifeq ($(MPI_LIBS),)
ifeq ($(MPI),1)
$(error MPI=1 but no MPI found (pkg-config ompi-c, mpicc): apt-get install libopenmpi-dev openmpi-bin)
endif
endif
endif
ifneq ($(MPI_LIBS),)
CFLAGS  += -DSSM_MPI $(MPI_CFLAGS)
LDLIBS  += $(MPI_LIBS)
endif
# the two dist files compile to something else with MPI on or off: rebuilt when that changes
MPI_STAMP := build/mpi_$(if $(MPI_LIBS),on,off).stamp
$(MPI_STAMP):
	@mkdir -p $(@D)
	@rm -f build/mpi_*.stamp
	@touch $@
build/src/dist/dist_mpi.o build/src/dist/dist_single.o: $(MPI_STAMP)

# ---- CUDA backend: built into libssm.a when nvcc is found (CUDA=0 forces a CPU-only build, which needs no
# CUDA). nvcc may be a wrapper script elsewhere on PATH (e.g. /usr/local/bin/nvcc), so CUDA_HOME is the first
# candidate that really has the headers: nvcc's own prefix, /usr/local/cuda, or /usr (Debian's toolkit).
# Kernels live in src/backend/cuda/*.cu beside their CPU twins; build/test_ops (tests/test_ops.c) compares each
# with the CPU op; tests/gpu/test_*.c test the rest on a GPU and print "skip - ..." where there is none. Hopper first (sm_90), Ampere compatible (sm_80).
CUDA      ?= 1
ifneq ($(CUDA),0)
NVCC      ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CUDA_HOME ?= $(firstword $(foreach d,$(patsubst %/bin/nvcc,%,$(NVCC)) /usr/local/cuda /usr,\
                $(if $(wildcard $(d)/include/cuda_runtime.h),$(d))))
endif
ifeq ($(CUDA_HOME),)
NVCC      :=
endif
# CUDA 12 or newer (graph instantiation, cp.async, the bf16 types we use); an older toolkit builds CPU-only.
ifneq ($(NVCC),)
NVCC_MAJOR := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
ifeq ($(shell [ "0$(NVCC_MAJOR)" -ge 12 ] && echo ok),)
$(warning nvcc $(NVCC) is CUDA $(NVCC_MAJOR); the CUDA backend needs 12 or newer: building CPU-only)
NVCC      :=
endif
endif

CPU_SRC := $(filter-out src/backend/cuda/%,$(wildcard src/*.c src/*/*.c src/*/*/*.c))
SRC     := $(if $(NVCC),$(wildcard src/*.c src/*/*.c src/*/*/*.c),$(CPU_SRC))
OBJ     := $(SRC:%.c=build/%.o)
TESTS   := $(patsubst tests/%.c,build/%,$(wildcard tests/test_*.c))
CU_OBJ  := $(if $(NVCC),$(patsubst %.cu,build/%.o,$(wildcard src/backend/cuda/*.cu)))
ifneq ($(NVCC),)
CFLAGS  += -DSSM_CUDA
LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lstdc++
endif
# ---- NCCL: several GPUs training one model (src/dist/dist_nccl.c, docs/distributed.md), in CUDA builds whose toolkit
# has it (NCCL=0 builds without: src/dist/dist_nccl_none.c then refuses several GPUs). Only dist_nccl.c sees the CUDA
# headers; the sanitizer and fuzz builds (CPU-only) never define SSM_NCCL.
NCCL      ?= auto
ifneq ($(NVCC),)
ifneq ($(NCCL),0)
HAVE_NCCL := $(and $(wildcard $(CUDA_HOME)/include/nccl.h),$(wildcard $(CUDA_HOME)/lib64/libnccl.so*))
endif
endif
ifneq ($(HAVE_NCCL),)
CFLAGS  += -DSSM_NCCL
LDLIBS  += -lnccl
build/src/dist/dist_nccl.o: CFLAGS += -I$(CUDA_HOME)/include
endif
# the NCCL files compile to something else with NCCL on or off: rebuilt when that changes. A file whose content is the
# choice, rewritten (at parse time) only when it differs: a missing stamp file would not do, since .SECONDARY below
# lets make skip missing prerequisites of an up-to-date target.
NCCL_FLAG := build/nccl.flag
NCCL_NOW  := $(if $(HAVE_NCCL),on,off)
$(shell mkdir -p build && [ "$$(cat $(NCCL_FLAG) 2>/dev/null)" = "$(NCCL_NOW)" ] || echo $(NCCL_NOW) >$(NCCL_FLAG))
build/src/dist/dist_nccl.o build/src/dist/dist_nccl_none.o build/src/dist/dist_single.o build/src/dist/dist_mpi.o: $(NCCL_FLAG)

all: build/ssm

# rebuilt whole: the CPU and CUDA backends have members of the same name (conv1d.o ...), which `ar r` on an
# existing archive would replace by name
build/libssm.a: $(OBJ) $(CU_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	$(AR) rcs $@ $^

# The command line is the public API's first client: it sees include/ (ssm.h) and nothing of src/.
build/tools/%.o: tools/%.c
	@mkdir -p $(@D)
	$(CC) $(filter-out -Isrc,$(CFLAGS)) -c $< -o $@

build/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

build/ssm: build/tools/ssm.o build/libssm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/test_%: build/tests/test_%.o build/libssm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/torch_dump: build/tests/torch_dump.o build/libssm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# --default-stream per-thread: our work goes on the per-thread default stream, which (unlike the legacy one)
# a CUDA graph can capture (decode steps are replayed as graphs).
NVCCFLAGS := -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_80,code=sm_80 \
             --default-stream per-thread -Xcompiler -Wall,-Wextra,-Wno-unused-parameter -Iinclude -Isrc -MMD -MP \
             $(NVCC_EXTRA)
GPU_TESTS := $(patsubst tests/gpu/%.c,build/gpu/%,$(wildcard tests/gpu/test_*.c))
GPU_BENCH := $(patsubst bench/cuda_%_bench.c,build/gpu/bench_cuda_%,$(wildcard bench/cuda_*_bench.c))
ifneq ($(NVCC),)
build/src/backend/cuda/%.o: src/backend/cuda/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

build/gpu/test_%: build/tests/gpu/test_%.o build/libssm.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/gpu/bench_cuda_%: build/bench/cuda_%_bench.o build/libssm.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/bench/%.o: bench/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include -c $< -o $@

build/tests/gpu/%.o: tests/gpu/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests -I$(CUDA_HOME)/include -c $< -o $@

cuda: $(GPU_TESTS) $(GPU_BENCH) build/ssm build/test_ops
else
cuda:
	@echo "no nvcc found: the CUDA backend is not built (CPU-only build)"
endif

tests: $(TESTS) build/ssm build/torch_dump build/asan/ssm build/bench_cpu_ssd build/bench_cpu_attn $(if $(NVCC),$(GPU_TESTS))

# CPU benchmarks of single ops (built with the tests so that they keep compiling; run by hand)
build/bench_cpu_%: bench/cpu_%_bench.c build/libssm.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

test: tests
	tests/run_tests.sh

data:
	scripts/get_data.sh data

data/tinyshakespeare.txt:
	scripts/get_data.sh data tinyshakespeare.txt

# the main job: build, fetch tinyshakespeare, train the default model and print a sample
train: build/ssm data/tinyshakespeare.txt
	build/ssm train

# Fuzzing: the harnesses link only src/common.c and src/io/*.c, built with sanitizers into an archive so
# that a harness pulls in just the io files it calls. fuzz_checkpoint (the checkpoint loader) needs the model
# too: it links the whole CPU library, built the same way plus OpenMP, which clang takes from LLVM's runtime,
# libomp (Debian's libomp-dev; clang cannot use gcc's libgomp), and OpenBLAS.
# -fno-sanitize-recover turns every UBSan report into a crash the fuzzer records.
FUZZ_CC      ?= clang
FUZZ_CFLAGS  := -g -O1 -march=native -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
                -Wno-missing-field-initializers -Iinclude -Isrc \
                -fno-sanitize-recover=undefined -fno-omit-frame-pointer -MMD -MP
FUZZ_LIB_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,src/common.c $(wildcard src/io/*.c))
FUZZ_CPU_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(CPU_SRC))
FUZZ_BIN     := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

fuzz: $(FUZZ_BIN)

# the io files do not use OpenMP; the rest of the library (only in libssm_cpu.a) does
$(filter-out $(FUZZ_LIB_OBJ),$(FUZZ_CPU_OBJ)): FUZZ_OMP := -fopenmp

build/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

build/fuzz/libssm_io.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

build/fuzz/libssm_cpu.a: $(FUZZ_CPU_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libssm_io.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $< build/fuzz/libssm_io.a -lm -o $@

build/fuzz/fuzz_checkpoint: tests/fuzz/fuzz_checkpoint.c build/fuzz/libssm_cpu.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fopenmp -fsanitize=fuzzer,address,undefined $< build/fuzz/libssm_cpu.a \
	    $(CPU_LDLIBS) -o $@

# The sanitizer build: the CPU library and the CLI (no CUDA: ASan and the CUDA runtime do not mix) with
# AddressSanitizer and UBSan, OpenMP kept, in build/asan/ so its objects never meet the normal build's.
# -O1 -g keeps it fast enough for the CLI tests and its reports readable; -fno-sanitize-recover makes
# every UBSan report fatal. check-sanitize runs tests/test_cli*.sh with it (tests/run_tests.sh calls it):
#   detect_leaks=1        the commands that succeed must free all they allocate (test_cli.sh turns it off
#                         for the user errors, which exit(1) holding their allocations)
#   OPENBLAS_NUM_THREADS  one BLAS thread: OpenBLAS is not instrumented, and its own pool adds nothing here
# On x86-64 it targets AVX2 (x86-64-v3) rather than the host, so that where the normal build has AVX-512 the CPU
# kernels' AVX2 forms (src/backend/cpu/matmul.c's decode GEMV) still run under the sanitizers in every test run.
ASAN_ARCH   := $(if $(filter x86_64,$(shell uname -m)),-march=x86-64-v3,-march=native)
ASAN_CFLAGS := -O1 -g $(ASAN_ARCH) -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined $(BASE_CFLAGS)
ASAN_OBJ    := $(CPU_SRC:%.c=build/asan/%.o)

build/asan/tools/%.o: tools/%.c
	@mkdir -p $(@D)
	$(CC) $(filter-out -Isrc,$(ASAN_CFLAGS)) -c $< -o $@

build/asan/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -c $< -o $@

build/asan/libssm.a: $(ASAN_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

build/asan/ssm: build/asan/tools/ssm.o build/asan/libssm.a
	$(CC) $(ASAN_CFLAGS) $^ -o $@ $(CPU_LDLIBS)

check-sanitize: build/asan/ssm
	for t in tests/test_cli.sh tests/test_cli_runs.sh tests/test_cli_tasks.sh tests/test_cli_hostile.sh; do \
	    SSM=build/asan/ssm SSM_CLI_TAG=asan OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 \
	        UBSAN_OPTIONS=print_stacktrace=1 $$t || exit 1; done

clean:
	rm -rf build

.PHONY: all tests test data train fuzz check-sanitize clean
.SECONDARY:
-include $(OBJ:.o=.d) $(wildcard build/tests/*.d build/tests/gpu/*.d) $(CU_OBJ:.o=.d) build/tools/ssm.d $(FUZZ_CPU_OBJ:.o=.d) $(FUZZ_BIN:=.d)
-include $(ASAN_OBJ:.o=.d) build/asan/tools/ssm.d
