# The few commands a person types. Each delegates to a script in ci/ so CI and people run the same thing.
SEEDS ?= 2000
JOBS ?= 2

.PHONY: test test-unit test-sim test-mutations test-crash test-guest test-guest-netns sim soak bench bench-pmem bench-verbs bench-peers trace-commit run deps

## test: everything CI runs: unit + property tests, simulation seeds, mutation checks, crash loop, guest suite
test: deps
	bash ci/test.sh

test-unit:
	bash ci/test-unit.sh

## sim: run SEEDS simulation seeds on JOBS threads (a failure prints the command that replays it)
sim:
	cargo run --release -q -p decree-tools -- sim --seeds $(SEEDS) --jobs $(JOBS)

test-sim:
	bash ci/test-sim.sh

test-mutations:
	bash ci/test-mutations.sh

test-crash:
	bash ci/test-crash.sh

## test-guest: the soft-RoCE + NVDIMM suite inside a QEMU guest
test-guest:
	bash ci/test-guest.sh

## test-guest-netns: does rxe carry RDMA between network namespaces? (Debian 6.1 and 6.12: no; not in `make test`)
test-guest-netns:
	bash ci/guest/extra-rxe-netns.sh

## soak: long runs (many more seeds and crash iterations)
soak:
	bash ci/soak.sh

bench:
	bash ci/bench.sh

bench-pmem:
	bash ci/bench-pmem.sh

bench-verbs:
	bash ci/bench-verbs.sh

## bench-peers: decree beside a 3-node etcd on loopback (installs etcd itself)
bench-peers:
	bash ci/bench-peers.sh

## trace-commit: where a one-client put's time goes (hops, log writes and syncs, replica CPU), from perf tracepoints
trace-commit:
	bash ci/trace-commit.sh

## run: a local replicated cluster, served and benchmarked, on embedded defaults
run: deps
	bash ci/run-demo.sh

## deps: install the system packages the build and tests need (Debian)
deps:
	bash ci/install-deps.sh
