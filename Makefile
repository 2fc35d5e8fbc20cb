# The two commands README starts with, and a few more. The workspace is the
# `warden` package (library and binary) and the dev kit in devkit/ (`warden-dev`).
.PHONY: run test services lint deny bench chaos cluster cluster-stop cluster-chaos

CARGO ?= cargo

## The main job end to end: a worker on the local broker against a mixed batch
## (`warden-dev demo`, from the dev kit in devkit/).
run: services
	eval "$$(bash scripts/setup-playwright.sh)" && $(CARGO) run --quiet -p warden-devkit --bin warden-dev -- demo

## The whole test suite (unit + integration against the real services, Chromium included).
test: services
	eval "$$(bash scripts/setup-playwright.sh)" && $(CARGO) test --workspace --all-targets --no-fail-fast

## Throughput, latency and memory of the shipped worker against a raw-client
## baseline on a throwaway prefix (a few minutes). BENCH_ARGS="--repeat 3 --json" etc.
## `warden-dev bench` runs the release `warden` binary beside it as its worker processes.
bench: services
	$(CARGO) build --release --quiet -p warden --bin warden
	eval "$$(bash scripts/setup-playwright.sh)" && $(CARGO) run --release --quiet -p warden-devkit --bin warden-dev -- bench $(BENCH_ARGS)

## The chaos suite at size N (tasks), release build: kills, cuts, a blackhole,
## broker-side closes, consumer cancels, token revocations and Chromium killed
## mid-login while N tasks flow; prints lost/duplicates/faults.
N ?= 100000
chaos: services
	eval "$$(bash scripts/setup-playwright.sh)" && WARDEN_CHAOS_N=$(N) $(CARGO) test --release --test chaos -- --nocapture

services:
	@bash scripts/ensure-services.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Licences, bans, sources, and RustSec advisories where GitHub is reachable.
deny:
	@bash scripts/deny.sh

## A 3-node RabbitMQ cluster of its own (ports 5701-5703, beside the machine's
## broker, which it never touches); prints the WARDEN_AMQP_URL list for it.
cluster:
	@bash scripts/cluster.sh start

cluster-stop:
	@bash scripts/cluster.sh stop

## The cluster chaos test at size N on the 3-node cluster (started and stopped
## by the test when not running): the leader of {p}.tasks and of a retry queue
## SIGKILLed and brought back, then a rolling restart; prints lost/duplicates
## and the time to ready after each fault.
cluster-chaos: services
	eval "$$(bash scripts/setup-playwright.sh)" && WARDEN_CLUSTER_CHAOS_N=$(N) $(CARGO) test --release --test cluster -- --nocapture
