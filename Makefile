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

# Unmount whatever FUSE mount an earlier (killed) test run left under
# TESTTMP. A test binary that died while one of its threads waited on its own
# mount is stuck in the kernel until that mount's FUSE connection is aborted
# (fusectl), so abort first, then detach.
unmount-stale:
	@mkdir -p $(TESTTMP)
	@awk -v p="$(TESTTMP)/" '{t = ""; for (i = 7; i < NF; i++) if ($$i == "-") { t = $$(i+1); break }} \
		t ~ /^fuse/ && index($$5, p) == 1 {split($$3, d, ":"); print d[2], $$5}' \
		/proc/self/mountinfo | sort -rk2 | while read -r minor m; do \
		echo "unmounting stale $$m"; \
		mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true; \
		[ -w /sys/fs/fuse/connections/$$minor/abort ] && echo 1 > /sys/fs/fuse/connections/$$minor/abort; \
		umount -l "$$m" || true; done
	@if mountpoint -q /sys/fs/fuse/connections 2>/dev/null && [ -z "$$(ls /sys/fs/fuse/connections)" ]; then \
		umount /sys/fs/fuse/connections || true; fi
	@# Network namespaces of multi-server tests that were killed (mrt<n>-…, mre<n>-…).
	@for ns in $$(ip netns list 2>/dev/null | awk '$$1 ~ /^mr[te][0-9]+-/ {print $$1}'); do \
		echo "removing stale namespace $$ns"; ip netns del "$$ns" || true; done

# -timeout: a hang gives a backtrace; -p 1: one package at a time (mount tests
# print live and do not compete); -count 1: never a cached result.
test: unmount-stale
	TMPDIR=$(TESTTMP) $(GO) test -timeout 25m -p 1 -count 1 $(PKGS)

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

# mreplfs against real DRBD 8.4, both inside the same two User-Mode Linux
# guests (root; downloads its Debian packages, see bench/drbd/doc.go).
# Results: bench/drbd/results/. SMOKE=1: one short round (CI), results in the
# work directory.
ROUNDS ?= 3
FILES  ?= 300
.PHONY: bench-drbd
bench-drbd:
	$(GO) run ./bench/drbd -rounds $(ROUNDS) -files $(FILES) $(if $(SMOKE),-smoke)
