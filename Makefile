# outbox-relay: the commands a newcomer needs. `make test` is what CI runs.
GO      ?= go
PKGS    ?= ./...
BIN     ?= bin/outbox-relay

.PHONY: build test test-short vet fmt demo bench fuzz clean

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/outbox-relay

## test: unit and integration tests (throwaway Postgres + in-process Kafka), race detector on.
test: vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## test-short: pure unit tests only (no Postgres, no broker).
test-short:
	$(GO) test -race -count=1 -short ./checkpoint/ ./sink/

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

## demo: throwaway Postgres + local Kafka-protocol broker + the relay, end to end. Ctrl-C cleans up.
demo: build
	$(GO) run ./cmd/outbox-relay-demo --relay $(BIN)

## bench: the benchmark suite (see docs/benchmarks.md).
bench:
	$(GO) run ./bench

clean:
	rm -rf bin
