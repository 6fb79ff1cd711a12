# gpt toolchain: one static library (lib/libgpt.a) and thin programs over it.
#   make            build everything            make test     build, then run t/ with prove
#   make asan       ASan+UBSan build + tests    make install  PREFIX=/usr/local
#   make demo       train a tiny model, generate (once gpt-train lands)
#   make clean
# O=DIR puts every output under DIR (make asan uses O=asan); CUDA=0|1 overrides nvcc detection.

O       ?= .
PREFIX  ?= /usr/local
CC      ?= cc
NVCC    ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA    ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
VERSION := 0.1.0

PKGS     := libpcre2-8 libzstd yaml-0.1 libcjson libxxhash openblas
OPT      ?= -O2 -g
SAN      ?=
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) -fopenmp -Wall -Wextra -Werror -Wshadow \
             -Ilib -DGPT_VERSION='"$(VERSION)"' -DGPT_SHARE_DIR='"$(PREFIX)/share/gpt"' -DGPT_CONFIG_DIR='"$(PREFIX)/share/gpt/configs"' $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS)
# OpenBLAS built on OpenMP shares our thread pool; the pthread build spins its own threads
# against OpenMP's and halves GEMM speed on small machines. Use it when installed (scripts/deps).
BLAS_OMP_DIR ?= $(firstword $(wildcard /usr/lib/*-linux-gnu/openblas-openmp))
comma := ,
BLAS_LIBS := $(if $(BLAS_OMP_DIR),-L$(BLAS_OMP_DIR) -Wl$(comma)-rpath$(comma)$(BLAS_OMP_DIR) -lopenblas,)
LDLIBS_ALL = $(BLAS_LIBS) $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lpcre2-8 -lzstd -lyaml -lcjson -lxxhash -lopenblas) \
             -lm -lpthread $(LDLIBS)
LDFLAGS_ALL = $(SAN) -fopenmp $(LDFLAGS)
# MPI (MPICH) for data parallelism in gpt-train; MPI=0 builds without it (lib/comm.c then offers
# only the single-process communicator).
MPI     ?= $(shell pkg-config --exists mpich 2>/dev/null && echo 1 || echo 0)
ifeq ($(MPI),1)
CFLAGS_ALL += -DGPT_MPI=1 $(shell pkg-config --cflags mpich)
LDLIBS_ALL += $(shell pkg-config --libs mpich)
endif

LIB_SRC  := $(wildcard lib/*.c)
CMD_SRC  := $(wildcard cmd/*.c)
TEST_SRC := $(wildcard t/*.c)
FUZZ_SRC := $(wildcard fuzz/*.c)
TOOL_SRC := $(wildcard t/tools/*.c)
CU_SRC   := $(wildcard kernels/*.cu)

LIB_OBJ  := $(LIB_SRC:%.c=$(O)/obj/%.o)
PROGS    := $(CMD_SRC:cmd/%.c=$(O)/bin/%)
TESTS    := $(TEST_SRC:t/%.c=$(O)/t/bin/%)
TOOLS    := $(TOOL_SRC:t/tools/%.c=$(O)/t/tools/%)
LIBGPT   := $(O)/lib/libgpt.a

ifeq ($(CUDA),1)
CU_OBJ   := $(CU_SRC:%.cu=$(O)/obj/%.o)
NVFLAGS  ?= -O2 -std=c++17 -Ilib -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror \
            -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
CFLAGS_ALL += -DGPT_CUDA=1
CUDA_LIBDIRS := $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib)
# cuBLAS ships only as a shared library here: an rpath finds it at run time without LD_LIBRARY_PATH.
LDLIBS_ALL += $(foreach d,$(CUDA_LIBDIRS),-L$(d) -Wl$(comma)-rpath$(comma)$(d)) -lcublas -lcudart_static -ldl -lrt -lstdc++
# NCCL (kernels/comm_nccl.cu) when its header and library are there (shared only: the rpath above
# or NCCL_HOME's finds it); without them the NCCL communicator reports that it is missing.
NCCL_HOME ?= $(CUDA_HOME)
NCCL_LIBDIR := $(firstword $(dir $(wildcard $(NCCL_HOME)/lib64/libnccl.so* $(NCCL_HOME)/lib/libnccl.so* $(NCCL_HOME)/targets/x86_64-linux/lib/libnccl.so*)))
NCCL    ?= $(if $(and $(wildcard $(NCCL_HOME)/include/nccl.h),$(NCCL_LIBDIR)),1,0)
ifeq ($(NCCL),1)
NVFLAGS += -DGPT_NCCL=1 -I$(NCCL_HOME)/include
LDLIBS_ALL += -L$(NCCL_LIBDIR) -Wl$(comma)-rpath$(comma)$(NCCL_LIBDIR) $(if $(wildcard $(NCCL_LIBDIR)libnccl.so),-lnccl,-l:libnccl.so.2)
endif
else
CU_OBJ   :=
TESTS    := $(filter-out $(O)/t/bin/test_cuda%,$(TESTS))
endif

.SECONDARY:
.PHONY: all test asan install clean deps demo fuzz check-deps
all: check-deps $(LIBGPT) $(PROGS) $(TESTS) $(TOOLS)

check-deps:
	@pkg-config --exists $(PKGS) || { echo "missing build dependencies; run: scripts/deps" >&2; exit 1; }

$(O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# AdamW's sqrtf vectorizes only without errno (GCC ignores a per-function optimize("no-math-errno")
# for builtins); sqrt stays correctly rounded, so the bits do not change.
$(O)/obj/lib/optim.o: CFLAGS_ALL += -fno-math-errno

$(O)/obj/kernels/%.o: kernels/%.cu
	@mkdir -p $(dir $@)
	@echo '  NVCC    $<'
	@$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(LIBGPT): $(LIB_OBJ) $(CU_OBJ)
	@mkdir -p $(dir $@)
	@echo '  AR      $@'
	@rm -f $@ && ar rcs $@ $^

$(O)/bin/%: $(O)/obj/cmd/%.o $(LIBGPT)
	@mkdir -p $(dir $@)
	@echo '  LD      $@'
	@$(CC) $(LDFLAGS_ALL) $< $(LIBGPT) $(LDLIBS_ALL) -o $@

$(O)/t/bin/%: $(O)/obj/t/%.o $(LIBGPT)
	@mkdir -p $(dir $@)
	@echo '  LD      $@'
	@$(CC) $(LDFLAGS_ALL) $< $(LIBGPT) $(LDLIBS_ALL) -o $@

$(O)/t/tools/%: $(O)/obj/t/tools/%.o $(LIBGPT)
	@mkdir -p $(dir $@)
	@echo '  LD      $@'
	@$(CC) $(LDFLAGS_ALL) $< $(LIBGPT) $(LDLIBS_ALL) -o $@

deps:
	@scripts/deps

# Tests find programs through GPT_BIN and shared data through GPT_SHARED.
PROVE ?= prove
PROVE_FLAGS ?= -j2
test: deps
	@$(MAKE) --no-print-directory all
	GPT_BIN=$(abspath $(O)/bin) GPT_TBIN=$(abspath $(O)/t/bin) GPT_CUDA_BUILT=$(CUDA) \
	  $(PROVE) $(PROVE_FLAGS) t/*.t $(TESTS)

asan: deps
	@$(MAKE) --no-print-directory O=asan OPT='-O1 -g -fno-omit-frame-pointer' \
	  SAN='-fsanitize=address,undefined -fno-sanitize-recover=all' CUDA=0 all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  GPT_BIN=$(abspath asan/bin) GPT_TBIN=$(abspath asan/t/bin) GPT_CUDA_BUILT=0 GPT_ASAN=1 \
	  $(PROVE) $(PROVE_FLAGS) t/*.t $(filter-out asan/t/bin/test_cuda%,$(TESTS:$(O)/%=asan/%))

# libFuzzer targets (clang); each parser has one. Run: fuzz/bin/NAME -max_total_time=60 fuzz/corpus/NAME
FUZZ_CC ?= clang
fuzz: $(FUZZ_SRC:fuzz/%.c=fuzz/bin/%)
fuzz/bin/%: fuzz/%.c $(LIB_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Ilib \
	  $(shell pkg-config --cflags $(PKGS)) $< $(LIB_SRC) $(shell pkg-config --libs $(PKGS)) -lm -fopenmp=libgomp -o $@

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/gpt/configs \
	  $(DESTDIR)$(PREFIX)/share/gpt/tokenizers $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/gpt \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBGPT) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 lib/*.h $(DESTDIR)$(PREFIX)/include/gpt/
	-install -m 644 share/configs/*.yaml $(DESTDIR)$(PREFIX)/share/gpt/configs/ 2>/dev/null
	for s in 1 5 7; do for f in man/man$$s/*.$$s; do [ -e "$$f" ] && install -m 644 $$f $(DESTDIR)$(PREFIX)/share/man/man$$s/; done; done; true

demo: deps
	@$(MAKE) --no-print-directory all
	scripts/demo

clean:
	rm -rf bin obj lib/libgpt.a t/bin t/tools/bin asan fuzz/bin
	rm -f $(TOOLS)

-include $(LIB_OBJ:.o=.d) $(CMD_SRC:%.c=$(O)/obj/%.d) $(TEST_SRC:%.c=$(O)/obj/%.d) $(TOOL_SRC:%.c=$(O)/obj/%.d) $(CU_OBJ:.o=.d)
