package relay_test

import outboxrelay "github.com/outbox-relay/outbox-relay"

func relaytestLSN(v uint64) outboxrelay.LSN { return outboxrelay.LSN(v) }
