# ssm: byte-level state space language models in C.
#   make          build build/ssm and build/libssm.a
#   make test     build and run every test (tests/run_tests.sh)
#   make data     download tinyshakespeare and enwik8 into data/ (checksummed)
#   make train    build, fetch tinyshakespeare, train the default model and sample from it
CC      ?= cc
OPT     ?= -O3 -march=native
CFLAGS  += $(OPT) -std=c11 -D_GNU_SOURCE -fopenmp -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers -Iinclude -Isrc -MMD -MP
# Prefer the OpenMP build of OpenBLAS so BLAS threads and our OpenMP threads share one pool.
BLASDIR := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp))
ifneq ($(BLASDIR),)
BLAS    := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas
else
BLAS    := -lopenblas
endif
LDLIBS  += $(BLAS) -lm -fopenmp

SRC     := $(wildcard src/*.c src/*/*.c src/*/*/*.c)
OBJ     := $(SRC:%.c=build/%.o)
TESTS   := $(patsubst tests/%.c,build/%,$(wildcard tests/test_*.c))

all: build/ssm

build/libssm.a: $(OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

build/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

build/ssm: build/tools/ssm.o build/libssm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/test_%: build/tests/test_%.o build/libssm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/torch_dump: build/tests/torch_dump.o build/libssm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

tests: $(TESTS) build/ssm build/torch_dump

test: tests
	tests/run_tests.sh

data:
	scripts/get_data.sh data

data/tinyshakespeare.txt:
	scripts/get_data.sh data tinyshakespeare.txt

# the main job: build, fetch tinyshakespeare, train the default model and print a sample
train: build/ssm data/tinyshakespeare.txt
	build/ssm train

clean:
	rm -rf build

.PHONY: all tests test data train clean
.SECONDARY:
-include $(OBJ:.o=.d) $(TESTS:build/%=build/tests/%.d) build/tools/ssm.d
