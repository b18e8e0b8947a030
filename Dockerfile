# Image for the outbox-relay daemon.
#
#   docker build -t outbox-relay .
#   docker run --rm -p 9187:9187 \
#     -e OUTBOX_RELAY_PG_URL=postgres://... -e OUTBOX_RELAY_KAFKA_BROKERS=host:9092 \
#     outbox-relay
#
# docker-compose.yml in this directory builds it and runs it against a
# local Postgres and Kafka.

# ---- build stage ------------------------------------------------------------
FROM golang:1.26-bookworm AS build

WORKDIR /src

# Modules first, in their own layer: editing the source does not download the
# dependencies again. (The golang image sets GOTOOLCHAIN=local, so the build
# fails instead of fetching a toolchain if go.mod ever needs a newer Go.)
COPY go.mod go.sum ./
RUN go mod download

COPY . .

# A static binary (no cgo) runs on the distroless static image, which has no
# libc. -trimpath drops local paths from the binary; -s -w drop the symbol
# table and DWARF data.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/outbox-relay ./cmd/outbox-relay

# ---- runtime stage ----------------------------------------------------------
# static-debian12 holds CA certificates, tzdata and /etc/passwd, and no shell.
# The :nonroot tag runs as uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=build /out/outbox-relay /outbox-relay

USER nonroot:nonroot

# The daemon's default metrics address is 127.0.0.1:9187, which cannot be
# reached through a published port; listen on all interfaces in the container.
# /metrics, /healthz and /readyz are served here.
ENV OUTBOX_RELAY_METRICS_ADDR=0.0.0.0:9187
EXPOSE 9187

ENTRYPOINT ["/outbox-relay"]
CMD ["run"]
