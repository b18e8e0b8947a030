package replication

import "testing"

func TestAttackParseTable(t *testing.T) {
	for _, s := range []string{"", ".", "a.", ".a", `"a`, `a""`, `"a"b`, `""""`, `"""".x`, `"".x`, `x.""`, `" "`, `a. b`, "a.b.c", `"a.b".c`, `"a"."b"."c"`, "a\x00b", "public.outbox ", `"public".outbox`, `public."outbox`, "öü.é", `"a""".b`} {
		tn, err := ParseTable(s)
		if err != nil {
			t.Logf("%-16q -> error %v", s, err)
			continue
		}
		t.Logf("%-16q -> schema %q table %q  SQL %s", s, tn.Schema, tn.Table, tn.SQL())
	}
	for _, p := range []string{"a,b", "a'b", `a"b`, " a ", "ü", "a\x00b"} {
		t.Logf("publication %q -> %s", p, publicationNamesArg(p))
	}
}
