-- One sample outbox event for the docker compose demo (docker-compose.yml).
--
-- The compose service `demo-event` runs this file once the relay is
-- streaming: a logical replication slot only sees changes committed after the
-- slot was created, so the insert must come after the relay's first start.
-- This file creates nothing; public.outbox comes from testdata/outbox.sql.
--
-- To insert more events by hand:
--
--   docker compose exec -T postgres psql -U postgres -d outbox < testdata/compose-demo.sql
--
-- or type an INSERT like the one below in
--
--   docker compose exec postgres psql -U postgres -d outbox
--
-- id (gen_random_uuid()) and created_at (now()) take their defaults. The
-- event reaches Kafka when the transaction commits; events inserted in one
-- transaction are produced in insert order.

BEGIN;

INSERT INTO public.outbox (aggregate_type, aggregate_id, event_type, payload, headers)
VALUES (
    'order',
    '42',
    'OrderCreated',
    '{"order_id": "42", "customer_id": "c-7", "total": 10, "currency": "EUR"}',
    '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'
);

COMMIT;
