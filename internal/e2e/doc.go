// Package e2e runs the real outbox-relay binary against a throwaway
// Postgres and an in-process broker, and kills it the way production does
// (SIGKILL), to check the delivery contract across process deaths and hot
// standby takeover. It has only tests.
package e2e
