package admin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/replication"
)

// checkRole needs REPLICATION (or, on Amazon RDS/Aurora, membership in
// rds_replication) to create, stream from and peek the slot.
func checkRole(ctx context.Context, conn *pgx.Conn, add func(Check)) error {
	var name string
	var super, repl, rds bool
	err := conn.QueryRow(ctx, `
		SELECT r.rolname, r.rolsuper, r.rolreplication,
		       coalesce((SELECT pg_has_role(current_user, g.oid, 'MEMBER') FROM pg_roles g WHERE g.rolname = 'rds_replication'), false)
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&name, &super, &repl, &rds)
	if err != nil {
		return fmt.Errorf("read the role's attributes: %w", err)
	}
	role := pgx.Identifier{name}.Sanitize()
	add(Check{
		Name: "replication role", OK: super || repl || rds,
		Detail: fmt.Sprintf("role %s has neither the REPLICATION attribute nor rds_replication", role),
		Fix:    fmt.Sprintf("ALTER ROLE %s WITH REPLICATION; (on Amazon RDS/Aurora: GRANT rds_replication TO %s;)", role, role),
	})
	return nil
}

// setting reads a pg_settings value in its base unit; ok is false when the
// server does not have it.
func setting(ctx context.Context, conn *pgx.Conn, name string) (v int64, unit string, ok bool, err error) {
	var s string
	var u *string
	err = conn.QueryRow(ctx, "SELECT setting, unit FROM pg_settings WHERE name = $1", name).Scan(&s, &u)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	if u != nil {
		unit = *u
	}
	v, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	return v, unit, true, nil
}

// checkWALSettings reports the two settings that decide what happens when
// the relay is down or stuck. Both are risks to know, never refusals.
func checkWALSettings(ctx context.Context, conn *pgx.Conn, cfg replication.Config, add func(Check)) error {
	keep, unit, ok, err := setting(ctx, conn, "max_slot_wal_keep_size")
	if err != nil {
		return err
	}
	if ok {
		if keep < 0 {
			add(Check{
				Name: "max_slot_wal_keep_size", Warning: true,
				Detail: "max_slot_wal_keep_size is -1 (unlimited): while the relay is stopped or stuck, the slot keeps every WAL file and can fill the disk",
				Fix:    "alert on outbox_relay_slot_retained_wal_bytes, and consider ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (a slot past it is lost: a gap the relay reports)",
			})
		} else {
			add(Check{
				Name: "max_slot_wal_keep_size", OK: true,
				Detail: fmt.Sprintf("max_slot_wal_keep_size is %d%s: a relay that falls that far behind loses its slot (wal_status 'lost', a gap it refuses to start over)", keep, unit),
				Fix:    "alert on outbox_relay_slot_safe_wal_size_bytes well before 0",
			})
		}
	}
	timeout, _, ok, err := setting(ctx, conn, "wal_sender_timeout")
	if err != nil {
		return err
	}
	if ok {
		d := time.Duration(timeout) * time.Millisecond
		switch {
		case timeout == 0:
			add(Check{
				Name: "wal_sender_timeout", Warning: true,
				Detail: "wal_sender_timeout is 0: a relay that vanished without closing its connection keeps the slot active until TCP gives up, so a standby cannot take over",
				Fix:    "ALTER SYSTEM SET wal_sender_timeout = '60s'; SELECT pg_reload_conf();",
			})
		case d < 2*cfg.StatusInterval:
			add(Check{
				Name: "wal_sender_timeout", Warning: true,
				Detail: fmt.Sprintf("wal_sender_timeout is %s, under twice the status interval %s: a busy relay risks being disconnected", d, cfg.StatusInterval),
				Fix:    fmt.Sprintf("lower --status-interval under %s, or raise wal_sender_timeout", d/2),
			})
		default:
			add(Check{Name: "wal_sender_timeout", OK: true, Detail: fmt.Sprintf("wal_sender_timeout is %s", d)})
		}
	}
	return nil
}

// checkCapacity needs a free replication slot (when the relay must create
// one), a free WAL sender, and the rights to create a missing publication.
func checkCapacity(ctx context.Context, conn *pgx.Conn, cfg replication.Config, in *Inspection, add func(Check)) error {
	var maxSlots, usedSlots, maxSenders, usedSenders int
	err := conn.QueryRow(ctx, `
		SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
		       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int`).
		Scan(&maxSlots, &usedSlots, &maxSenders, &usedSenders)
	if err != nil {
		return fmt.Errorf("read replication capacity: %w", err)
	}
	if !in.Slot.Exists {
		add(Check{
			Name: "max_replication_slots", OK: usedSlots < maxSlots,
			Detail: fmt.Sprintf("all %d replication slots (max_replication_slots) are in use, so slot %q cannot be created", maxSlots, cfg.Slot),
			Fix:    "drop an unused slot (SELECT slot_name, active FROM pg_replication_slots) or raise max_replication_slots and restart Postgres",
		})
	}
	// A slot held by another relay means this one is a standby: it takes
	// over that relay's sender when it goes.
	add(Check{
		Name: "max_wal_senders", OK: usedSenders < maxSenders || in.Slot.ActivePID != 0,
		Detail: fmt.Sprintf("all %d WAL senders (max_wal_senders) are in use", maxSenders),
		Fix:    "raise max_wal_senders and restart Postgres, or stop an unused replication client (SELECT * FROM pg_stat_replication)",
	})

	if in.PublicationExists || !cfg.Create {
		return nil
	}
	var super, canCreate, owner bool
	tn := cfg.TableName()
	err = conn.QueryRow(ctx, `
		SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
		       has_database_privilege(current_database(), 'CREATE'),
		       coalesce((SELECT pg_has_role(current_user, c.relowner, 'USAGE')
		                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		                 WHERE n.nspname = $1 AND c.relname = $2), false)`, tn.Schema, tn.Table).Scan(&super, &canCreate, &owner)
	if err != nil {
		return fmt.Errorf("read publication rights: %w", err)
	}
	add(Check{
		Name: "publication rights", OK: super || (canCreate && (owner || cfg.TableLess())),
		Detail: fmt.Sprintf("publication %s is missing and this role cannot create it (it needs CREATE on the database and to own %s)", replication.QuoteIdent(cfg.Publication), tn),
		Fix:    "have a DBA run: " + CreatePublicationSQL(cfg),
	})
	return nil
}
