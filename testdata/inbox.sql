-- The inbox table of package inbox (inbox.CreateSchema creates it; inbox.SchemaSQL prints it
-- for another name). One row per applied event and consumer group.
CREATE TABLE IF NOT EXISTS "inbox" (
    consumer_group  text        NOT NULL,
    event_id        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS "inbox_applied_at_idx" ON "inbox" (consumer_group, applied_at);
