# The two commands README starts with, and a few more.
.PHONY: run test services lint

CARGO ?= cargo

## The main job end to end: a worker on the local broker against a mixed batch.
run: services
	eval "$$(bash scripts/setup-playwright.sh)" && $(CARGO) run --quiet -- demo

## The whole test suite (unit + integration against the real services, Chromium included).
test: services
	eval "$$(bash scripts/setup-playwright.sh)" && $(CARGO) test --all-targets --no-fail-fast

services:
	@bash scripts/ensure-services.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
