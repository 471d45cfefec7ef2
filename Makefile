# mreplfs — see README.md. Tests mount real FUSE filesystems and run a real
# Cyrus: run them as root (CI does).
GO       ?= go
# Every test's temporary directories live under TESTTMP, so stale mounts from
# an interrupted run can be found and removed before the next one.
TESTTMP  ?= /tmp/mreplfs-test
FUZZTIME ?= 30s
PKGS     := ./...

.PHONY: all build test race fuzz bench lint unmount-stale clean demo

all: build

build:
	$(GO) build -o bin/mreplfs ./cmd/mreplfs

# Unmount whatever FUSE mount an earlier (killed) test run left under TESTTMP.
unmount-stale:
	@mkdir -p $(TESTTMP)
	@awk -v p="$(TESTTMP)/" '$$3 ~ /^fuse/ && index($$2, p) == 1 {print $$2}' /proc/mounts | sort -r | \
		while read -r m; do echo "unmounting stale $$m"; umount -l "$$m" || true; done

# -timeout: a hang gives a backtrace; -p 1: one package at a time (mount tests
# print live and do not compete); -count 1: never a cached result.
test: unmount-stale
	TMPDIR=$(TESTTMP) $(GO) test -timeout 15m -p 1 -count 1 $(PKGS)

race: unmount-stale
	TMPDIR=$(TESTTMP) $(GO) test -race -timeout 20m -p 1 -count 1 ./journal/... ./rolemap/... ./fs/... ./peer/...

# Each fuzz target for FUZZTIME.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$t"; TMPDIR=$(TESTTMP) $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; done

bench: unmount-stale
	TMPDIR=$(TESTTMP) $(GO) test -run '^$$' -bench . -benchmem -timeout 30m -p 1 $(PKGS)

# The two-server demo (root): namespaces, mounts, peers, load, verification,
# teardown. See README.md.
demo: build
	./bin/mreplfs demo

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
