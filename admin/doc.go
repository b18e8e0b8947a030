// Package admin holds what an operator (or the relay, at the start of each
// session) does to the database around the stream: preflight checks,
// creating the publication, slot and checkpoint table, the publication
// watch, `status`, the slot tools (peek, advance, skip, drop), the slot
// monitor, and pruning old outbox rows in batches (PlanPrune, Prune).
//
// Each action gathers facts with SQL and judges them with pure functions
// (Inspection.Err, statusProblems, PlanSkip, DetectGap in checkpoint), so
// cmd/outbox-relay only parses flags and prints. Sessions is the
// replication.Preparer of the product: before every session it runs the
// gap check, preflight and setup, reads the slot, takes the publication
// watch's first reading, and gives the stream its Record hook (the watch's
// check, then checkpoint.Keeper raising the durable record).
package admin
