# outbox-relay: the commands a newcomer needs. `make test` then `make test-kafka` is what CI runs.
GO      ?= go
PKGS    ?= ./...
BIN     ?= bin/outbox-relay

.PHONY: build test test-kafka test-short vet fmt demo bench fuzz clean

## build: a static binary (CGO_ENABLED=0, as the Dockerfile builds): with cgo it links libc for
## the DNS resolver and os/user, whose pages add 1.4 MB to the relay's RSS (docs/benchmarks.md,
## "Resident pages of the binary"). Go's own resolver and /etc/passwd lookup are used instead;
## a host that needs NSS for them builds with `make build CGO=1`.
CGO ?= 0
build:
	CGO_ENABLED=$(CGO) $(GO) build -trimpath -o $(BIN) ./cmd/outbox-relay

## test: unit and integration tests (throwaway Postgres + in-process Kafka), race detector on.
test: vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## test-kafka: the broker-backed tests again, against Apache Kafka (KRaft) instead of kfake:
## the packages whose tests use internal/kafkatest, relaytest, faulttest or apachekafka. Needs
## Java 17+ and, on the first run, Maven (see README: Development). -p 1: each package runs
## its own brokers and Postgres; one package at a time keeps the fault tests' timings honest on
## 2 cores (about 6 min; -p 2 takes 3.5). OUTBOX_RELAY_KAFKA_VERSION=3.9.1 picks another release.
KAFKA_PKGS ?= $(shell $(GO) list -f '{{.ImportPath}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... | \
	awk '/internal\/(kafkatest|apachekafka|relaytest|faulttest)( |$$)/ {print $$1}')
test-kafka:
	OUTBOX_RELAY_APACHE_KAFKA=1 $(GO) test -race -count=1 -p 1 -timeout 40m $(KAFKA_PKGS)

## test-short: pure unit tests only (no Postgres, no broker).
test-short:
	$(GO) test -race -count=1 -short ./checkpoint/ ./sink/

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

## demo: throwaway Postgres + local Kafka-protocol broker + the relay, end to end. Ctrl-C cleans up.
## The demo is built and run as a binary, not with `go run`: go run exits 1
## whenever it sees the terminal's SIGINT, even after its child stopped cleanly.
demo: build
	$(GO) build -o bin/outbox-relay-demo ./cmd/outbox-relay-demo
	bin/outbox-relay-demo --relay $(BIN)

## bench: the benchmark suite (see docs/benchmarks.md). BENCH_ARGS passes flags, e.g.
## make bench BENCH_ARGS="-broker apache -scenarios drain,huge" (Apache Kafka needs Java 17+).
BENCH_ARGS ?=
bench:
	$(GO) run ./bench $(BENCH_ARGS)

## fmt: gofmt every Go file in place (make vet fails on unformatted files).
fmt:
	gofmt -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')

## fuzz: the decoder and topic-template fuzzers, FUZZTIME each (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./replication/
	$(GO) test -run '^$$' -fuzz '^FuzzTopicTemplate$$' -fuzztime $(FUZZTIME) ./route/

clean:
	rm -rf bin
