# Thin wrapper around Meson. Real build logic lives in meson.build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
MESON      ?= meson
PREFIX     ?= /usr/local
SUDO       := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

FUZZERS := fuzz_clienthello fuzz_proxy_v2 fuzz_hostname fuzz_config fuzz_der fuzz_http_request

.PHONY: all deps bench-deps bench deb rpm image check-dist demo build check check-asan asan fuzz install clean

all: build

deps:
	$(SUDO) sh scripts/deps

# Tools bench/ compares against (not needed for build or tests).
bench-deps:
	$(SUDO) sh scripts/deps --bench

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD) --buildtype=debugoptimized -Dwerror=true

build: $(BUILD)/build.ninja
	$(MESON) compile -C $(BUILD)

# A Visitor reaches a backend through a tunnel on loopback (scripts/demo). MODE=passthrough: the
# backend terminates TLS; MODE=terminate: the Client does and the backend speaks plain HTTP.
MODE ?= passthrough
demo: build
	RUNEWARP_BIN=$(BUILD)/runewarp MODE=$(MODE) bash scripts/demo

check: build
	$(MESON) test -C $(BUILD) --print-errorlogs

$(ASAN_BUILD)/build.ninja:
	$(MESON) setup $(ASAN_BUILD) --buildtype=debug -Dwerror=true \
	    -Db_sanitize=address,undefined -Db_lundef=false

check-asan asan: $(ASAN_BUILD)/build.ninja
	$(MESON) compile -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(MESON) test -C $(ASAN_BUILD) --print-errorlogs --timeout-multiplier=3 --no-suite epoll-repeat

$(FUZZ_BUILD)/build.ninja:
	CC=clang CXX=clang++ $(MESON) setup $(FUZZ_BUILD) --buildtype=debugoptimized \
	    -Dfuzz=enabled -Dtests=disabled -Db_sanitize=address,undefined -Db_lundef=false

# Builds the libFuzzer binaries with clang and runs each for FUZZ_SECONDS on a copy of its corpus.
fuzz: $(FUZZ_BUILD)/build.ninja
	$(MESON) compile -C $(FUZZ_BUILD) $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
	    mkdir -p fuzz-out/$$f; \
	    echo "== $$f for $(FUZZ_SECONDS)s"; \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(FUZZ_BUILD)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=fuzz-out/$$f/ fuzz-out/$$f fuzz/corpus/$$f; \
	done

# Side-by-side benchmark (bench/README.md); `make bench-deps` installs the comparison tools.
bench: build
	RUNEWARP_BIN=$(BUILD)/runewarp bench/run

# A binary Debian package from this tree (packaging/deb/build).
# Packages (debhelper, rpmbuild) and the container image land in dist/ (see packaging/README.md).
deb:
	packaging/deb/build

rpm:
	packaging/rpm/build

image: deb
	packaging/image/build

# Builds all three and checks each the way a user's machine would see it (scripts/check-dist).
check-dist:
	bash scripts/check-dist

install: build
	$(MESON) install -C $(BUILD) --destdir "$(DESTDIR)"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) build-deb fuzz-out dist build-dist-cache
