package apachekafka

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Security is a Kafka listener security protocol.
type Security string

// The listener security protocols. SSL listeners use a certificate the
// harness makes and signs with its own CA (Cluster.CAFile); SASL listeners
// authenticate the Options.Users.
const (
	Plaintext     Security = "PLAINTEXT"
	SASLPlaintext Security = "SASL_PLAINTEXT"
	SSL           Security = "SSL"
	SASLSSL       Security = "SASL_SSL"
)

// SASL mechanisms a Listener may enable.
const (
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
	Plain       = "PLAIN"
)

// Names the harness gives its own listeners; Options.Listeners may not
// reuse them.
const (
	// ClientListener is the PLAINTEXT listener every node has; brokers
	// talk to each other over it, Addrs returns it, and clients on it
	// are the principal User:ANONYMOUS.
	ClientListener = "PLAINTEXT"
	// ControllerListener is the KRaft controller listener.
	ControllerListener = "CONTROLLER"
)

// Listener is an extra client listener on every node, beside the
// PLAINTEXT one. Cluster.ListenerAddrs returns its addresses.
type Listener struct {
	// Name is the listener name: upper-case letters, digits and '_',
	// e.g. "SASL" or "TLS".
	Name string
	// Security is the listener's protocol.
	Security Security
	// Mechanisms are the SASL mechanisms it accepts (SASL protocols
	// only); default SCRAM-SHA-512.
	Mechanisms []string
}

// User is a SASL account. SCRAM users are written into the cluster
// metadata when the storage is formatted; PLAIN users into the listener's
// JAAS configuration.
type User struct {
	Name, Password string
	// Mechanism is ScramSHA512 (default), ScramSHA256 or Plain.
	Mechanism string
}

// Options configures a Cluster. The zero value is one combined
// broker+controller node of DefaultVersion with a PLAINTEXT listener on a
// free loopback port.
type Options struct {
	// Nodes is the number of nodes, each a combined broker and KRaft
	// controller (all nodes are voters); default 1. Use 1 or 3: a
	// 2-node quorum has no fault tolerance.
	Nodes int
	// Version is the Apache Kafka release; default DefaultVersion. A new
	// version is fetched once into the cache.
	Version string
	// CacheDir is the cache root; default $OUTBOX_RELAY_KAFKA_CACHE, then
	// os.UserCacheDir()/outbox-relay.
	CacheDir string
	// Java is the java binary; default $OUTBOX_RELAY_JAVA, then
	// $JAVA_HOME/bin/java, then java on PATH.
	Java string

	// Partitions is num.partitions (auto-created topics); default 3.
	Partitions int
	// ReplicationFactor is default.replication.factor and the factor of
	// the internal topics; default Nodes.
	ReplicationFactor int
	// MinInsyncReplicas is min.insync.replicas; default 2 when
	// ReplicationFactor >= 2, else 1.
	MinInsyncReplicas int
	// Config holds server.properties overrides for every node, applied
	// after the defaults, e.g. "auto.create.topics.enable": "false".
	// Keys the harness manages (node.id, listeners, log.dirs, ...) are
	// refused.
	Config map[string]string
	// NodeConfig holds overrides for single nodes, by index, applied
	// after Config.
	NodeConfig map[int]map[string]string

	// Listeners are extra client listeners (SASL, TLS).
	Listeners []Listener
	// Users are the SASL accounts (see User).
	Users []User
	// Authorizer turns on KRaft's StandardAuthorizer. User:ANONYMOUS
	// (the PLAINTEXT and controller listeners, and TLS clients) is a
	// super user, and allow.everyone.if.no.acl.found is true, so only
	// topics with ACLs are restricted; override it through Config.
	Authorizer bool

	// JVMFlags replace the default JVM flags (small heap, serial GC,
	// C1 only): see DefaultJVMFlags.
	JVMFlags []string
	// NoCDS turns off the class-data archive that makes JVM start-up
	// about twice as fast (see doc.go).
	NoCDS bool
	// StartTimeout bounds the wait for a node (or the whole cluster) to
	// become ready, on top of the caller's context; default 90 s.
	StartTimeout time.Duration
	// KeepDir keeps the cluster's directory (data and logs) after Close.
	KeepDir bool
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

// DefaultJVMFlags returns the JVM flags used when Options.JVMFlags is
// empty. They favour start-up time and a small footprint on a 2-core
// machine that also runs Postgres and the tests: a test broker moves
// little data, so C1-only code and a serial collector cost little.
func DefaultJVMFlags() []string {
	return []string{
		"-Xms128m", "-Xmx512m",
		"-XX:+UseSerialGC",
		"-XX:TieredStopAtLevel=1",
		"-XX:-UsePerfData",
		"-Djava.awt.headless=true",
	}
}

// managedKey reports whether the harness sets server.properties key k
// itself.
func managedKey(k string) bool {
	switch k {
	case "process.roles", "node.id", "controller.quorum.voters", "controller.quorum.bootstrap.servers",
		"listeners", "advertised.listeners", "listener.security.protocol.map",
		"controller.listener.names", "inter.broker.listener.name", "log.dirs", "log.dir", "metadata.log.dir":
		return true
	}
	return false
}

const defaultStartTimeout = 90 * time.Second

func (o *Options) setDefaults() {
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.Partitions == 0 {
		o.Partitions = 3
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = o.Nodes
	}
	if o.MinInsyncReplicas == 0 {
		o.MinInsyncReplicas = min(2, o.ReplicationFactor)
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = defaultStartTimeout
	}
	for i := range o.Listeners {
		l := &o.Listeners[i]
		if l.sasl() && len(l.Mechanisms) == 0 {
			l.Mechanisms = []string{ScramSHA512}
		}
	}
	for i := range o.Users {
		if o.Users[i].Mechanism == "" {
			o.Users[i].Mechanism = ScramSHA512
		}
	}
}

func (o *Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

func (o *Options) validate() error {
	switch {
	case o.Nodes < 1 || o.Nodes > 9:
		return fmt.Errorf("apachekafka: Options.Nodes is %d; use 1 to 9 (1 or 3 in practice)", o.Nodes)
	case o.ReplicationFactor > o.Nodes:
		return fmt.Errorf("apachekafka: Options.ReplicationFactor %d exceeds Options.Nodes %d", o.ReplicationFactor, o.Nodes)
	case o.MinInsyncReplicas > o.ReplicationFactor:
		return fmt.Errorf("apachekafka: Options.MinInsyncReplicas %d exceeds the replication factor %d", o.MinInsyncReplicas, o.ReplicationFactor)
	}
	for i := range o.NodeConfig {
		if i < 0 || i >= o.Nodes {
			return fmt.Errorf("apachekafka: Options.NodeConfig has node %d; nodes are 0 to %d", i, o.Nodes-1)
		}
	}
	for _, m := range append([]map[string]string{o.Config}, slices.Collect(maps.Values(o.NodeConfig))...) {
		if err := checkConfig(m); err != nil {
			return err
		}
	}
	if err := o.validateListeners(); err != nil {
		return err
	}
	return o.validateUsers()
}

func checkConfig(m map[string]string) error {
	for k, v := range m {
		if managedKey(k) {
			return fmt.Errorf("apachekafka: config key %q is managed by the harness; use Options.Listeners for listeners", k)
		}
		if !validKey(k) || strings.ContainsAny(v, "\n\r") {
			return fmt.Errorf("apachekafka: invalid config entry %q=%q", k, v)
		}
	}
	return nil
}

// validKey accepts property names (letters, digits, '.', '-', '_') and so
// keeps a key from injecting lines into server.properties.
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

func (o *Options) validateListeners() error {
	seen := map[string]bool{ClientListener: true, ControllerListener: true}
	for _, l := range o.Listeners {
		if !validListenerName(l.Name) {
			return fmt.Errorf("apachekafka: listener name %q: use upper-case letters, digits and '_'", l.Name)
		}
		if seen[l.Name] {
			return fmt.Errorf("apachekafka: listener name %q is taken; pick another", l.Name)
		}
		seen[l.Name] = true
		switch l.Security {
		case Plaintext, SSL, SASLPlaintext, SASLSSL:
		default:
			return fmt.Errorf("apachekafka: listener %q: unknown security %q; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", l.Name, l.Security)
		}
		if !l.sasl() && len(l.Mechanisms) > 0 {
			return fmt.Errorf("apachekafka: listener %q: Mechanisms need a SASL security protocol", l.Name)
		}
		for _, m := range l.Mechanisms {
			if m != ScramSHA256 && m != ScramSHA512 && m != Plain {
				return fmt.Errorf("apachekafka: listener %q: unsupported SASL mechanism %q; use %s, %s or %s", l.Name, m, ScramSHA512, ScramSHA256, Plain)
			}
		}
	}
	return nil
}

func validListenerName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !('A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func (o *Options) validateUsers() error {
	for _, u := range o.Users {
		if !validKey(u.Name) {
			return fmt.Errorf("apachekafka: user name %q: use letters, digits, '.', '-' and '_'", u.Name)
		}
		if u.Password == "" || strings.ContainsAny(u.Password, "\"\\,[]=\n\r") {
			return fmt.Errorf("apachekafka: user %q: the password must be non-empty and free of quotes, backslashes, ',', '[', ']', '=' and newlines", u.Name)
		}
		if u.Mechanism != ScramSHA256 && u.Mechanism != ScramSHA512 && u.Mechanism != Plain {
			return fmt.Errorf("apachekafka: user %q: unsupported mechanism %q", u.Name, u.Mechanism)
		}
	}
	return nil
}

func (l Listener) sasl() bool { return l.Security == SASLPlaintext || l.Security == SASLSSL }
func (l Listener) tls() bool  { return l.Security == SSL || l.Security == SASLSSL }

// serverProperties renders node n's server.properties.
func (c *Cluster) serverProperties(n *node) string {
	o := &c.opts
	rf, isr := strconv.Itoa(o.ReplicationFactor), strconv.Itoa(o.MinInsyncReplicas)
	p := map[string]string{
		"num.partitions":             strconv.Itoa(o.Partitions),
		"default.replication.factor": rf,
		"min.insync.replicas":        isr,
		"auto.create.topics.enable":  "true",

		"offsets.topic.replication.factor":                 rf,
		"offsets.topic.num.partitions":                     "3",
		"transaction.state.log.replication.factor":         rf,
		"transaction.state.log.min.isr":                    isr,
		"transaction.state.log.num.partitions":             "3",
		"share.coordinator.state.topic.replication.factor": rf,
		"share.coordinator.state.topic.min.isr":            isr,
		"group.initial.rebalance.delay.ms":                 "0",

		// Kafka's defaults are 2000 and 9000 ms. With them a node killed
		// with -9 keeps its leaderships for up to 9 s, and the same node
		// restarted at once is refused (DUPLICATE_BROKER_REGISTRATION)
		// until its old session expires. Tests that measure recovery
		// times for documentation set Kafka's values through Config.
		"broker.heartbeat.interval.ms": "500",
		"broker.session.timeout.ms":    "3000",
		// A first election waits a random 1-2 s by default (1000 ms).
		// Followers still wait controller.quorum.fetch.timeout.ms (2 s)
		// before they doubt a leader, so this only shortens elections.
		"controller.quorum.election.timeout.ms":     "300",
		"controller.quorum.election.backoff.max.ms": "300",

		// A test broker on a shared 2-core machine: few threads.
		"num.network.threads":               "2",
		"num.io.threads":                    "4",
		"num.recovery.threads.per.data.dir": "1",
		"background.threads":                "4",
	}
	c.securityProperties(p)
	maps.Copy(p, o.Config)
	maps.Copy(p, o.NodeConfig[n.index])
	c.nodeProperties(n, p)

	var b strings.Builder
	b.WriteString("# written by internal/apachekafka\n")
	for _, k := range slices.Sorted(maps.Keys(p)) {
		fmt.Fprintf(&b, "%s=%s\n", k, escapeProperty(p[k]))
	}
	return b.String()
}

// nodeProperties sets the keys the harness manages (see managedKey).
func (c *Cluster) nodeProperties(n *node, p map[string]string) {
	var voters []string
	for _, m := range c.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", m.id, m.ports[ControllerListener]))
	}
	listeners := []string{ClientListener, ControllerListener}
	protocols := []string{ClientListener + ":PLAINTEXT", ControllerListener + ":PLAINTEXT"}
	for _, l := range c.opts.Listeners {
		listeners = append(listeners, l.Name)
		protocols = append(protocols, l.Name+":"+string(l.Security))
	}
	var bind, advertised []string
	for _, name := range listeners {
		addr := fmt.Sprintf("%s://127.0.0.1:%d", name, n.ports[name])
		bind = append(bind, addr)
		if name != ControllerListener {
			advertised = append(advertised, addr)
		}
	}
	p["process.roles"] = "broker,controller"
	p["node.id"] = strconv.Itoa(int(n.id))
	p["controller.quorum.voters"] = strings.Join(voters, ",")
	p["listeners"] = strings.Join(bind, ",")
	p["advertised.listeners"] = strings.Join(advertised, ",")
	p["listener.security.protocol.map"] = strings.Join(protocols, ",")
	p["controller.listener.names"] = ControllerListener
	p["inter.broker.listener.name"] = ClientListener
	p["log.dirs"] = n.dataDir()
}

// securityProperties sets up SASL, TLS and the authorizer.
func (c *Cluster) securityProperties(p map[string]string) {
	o := &c.opts
	for _, l := range o.Listeners {
		prefix := "listener.name." + strings.ToLower(l.Name) + "."
		if l.sasl() {
			p[prefix+"sasl.enabled.mechanisms"] = strings.Join(l.Mechanisms, ",")
			for _, m := range l.Mechanisms {
				p[prefix+strings.ToLower(m)+".sasl.jaas.config"] = jaasConfig(m, o.Users)
			}
		}
	}
	if c.tls != nil {
		p["ssl.keystore.type"] = "PEM"
		p["ssl.keystore.location"] = c.tls.keystore
		p["ssl.truststore.type"] = "PEM"
		p["ssl.truststore.location"] = c.tls.caFile
	}
	if o.Authorizer {
		p["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
		p["super.users"] = "User:ANONYMOUS"
		p["allow.everyone.if.no.acl.found"] = "true"
	}
}

func jaasConfig(mechanism string, users []User) string {
	if mechanism != Plain {
		return "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	}
	var b strings.Builder
	b.WriteString("org.apache.kafka.common.security.plain.PlainLoginModule required")
	for _, u := range users {
		if u.Mechanism == Plain {
			fmt.Fprintf(&b, " user_%s=\"%s\"", u.Name, u.Password)
		}
	}
	b.WriteString(";")
	return b.String()
}

// escapeProperty escapes a value for a java.util.Properties file.
func escapeProperty(v string) string {
	return strings.NewReplacer(`\`, `\\`).Replace(v)
}

// scramArgs are StorageTool's --add-scram arguments for the SCRAM users.
func (o *Options) scramArgs() []string {
	var args []string
	for _, u := range o.Users {
		if u.Mechanism != Plain {
			args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", u.Mechanism, u.Name, u.Password))
		}
	}
	return args
}

// log4jConfig sends the node's logs to server.log, without the full
// config dumps every component prints at start.
func log4jConfig(logFile string) string {
	return strings.Join([]string{
		"status = warn",
		"appender.file.type = File",
		"appender.file.name = file",
		"appender.file.fileName = " + escapeProperty(logFile),
		"appender.file.append = true",
		"appender.file.layout.type = PatternLayout",
		"appender.file.layout.pattern = [%d] %p %m (%c)%n",
		"rootLogger.level = info",
		"rootLogger.appenderRef.file.ref = file",
		"logger.config.name = org.apache.kafka.common.config.AbstractConfig",
		"logger.config.level = warn",
		"logger.state.name = state.change.logger",
		"logger.state.level = warn",
		"",
	}, "\n")
}
