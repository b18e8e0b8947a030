// Package apachekafka runs a real Apache Kafka cluster (KRaft, no
// ZooKeeper) for `make test-kafka`: the same test bodies that run against
// kfake in `make test`, run here against the broker users deploy.
//
// # What it runs
//
// Start launches Options.Nodes nodes on 127.0.0.1, each a combined broker
// and controller (process.roles=broker,controller) and all of them voters
// of a static quorum (controller.quorum.voters). StartSingle is one node;
// StartCluster is three, where topics default to replication factor 3
// and min.insync.replicas=2. Every node has a PLAINTEXT listener
// (Addrs; brokers replicate over it) and a CONTROLLER listener on free
// ports, plus the Options.Listeners (SASL_PLAINTEXT, SSL, SASL_SSL) that a
// test asks for. SCRAM users are written into the metadata when the
// storage is formatted (kafka-storage format --add-scram), and SSL
// listeners use a certificate for 127.0.0.1/localhost signed by a CA the
// harness makes (CAFile, TLSConfig). Options.Authorizer turns on the
// StandardAuthorizer so a test can create ACLs.
//
// Start returns when every node lists every node in its own metadata
// (registered, unfenced, caught up). A node can then be stopped (SIGTERM,
// waited for), terminated (SIGTERM, not waited for), killed (SIGKILL) and
// started again on the same ports and data. Close kills every node and
// removes the cluster's temporary directory.
//
// A few broker defaults differ from Kafka's to keep tests quick: 3
// partitions, small internal topics, no initial rebalance delay, shorter
// KRaft elections, and broker heartbeats of 500 ms with a 3 s session
// (Kafka: 2 s and 9 s), so a killed node is fenced, and may register
// again, within about 3 s. Options.Config overrides any of them.
//
// # Where Kafka comes from
//
// The broker is the org.apache.kafka:kafka_2.13 artifact on Maven Central,
// pinned in pom.xml (DefaultVersion) with a log4j2 binding so the nodes
// log to server.log in their directory. The first Start for a version runs
//
//	mvn dependency:copy-dependencies
//
// on that pom into <cache>/kafka-<version>/lib, where <cache> is
// $OUTBOX_RELAY_KAFKA_CACHE or os.UserCacheDir()/outbox-relay (Maven's
// local repository goes to <cache>/m2). Later runs and other test
// packages reuse it; a lock file serialises concurrent first runs. It
// then trains a class-data archive (AppCDS) for the JDK in use: one node
// runs once with -XX:ArchiveClassesAtExit, and every later JVM maps the
// classes it loaded, which about halves start-up. It needs Java 17 or
// newer ($OUTBOX_RELAY_JAVA, $JAVA_HOME or java on PATH) and, for the
// first run, Maven ($OUTBOX_RELAY_MVN or mvn on PATH).
//
// # Processes
//
// Each JVM runs in its own process group with a parent-death signal
// (SIGKILL, Linux), started from a goroutine locked to its OS thread for
// the JVM's life, so a test binary that panics, times out or is killed
// with -9 takes its brokers with it. On other systems a killed test can
// leave a JVM running.
//
// # Tests
//
// New is the helper for a test: it skips unless OUTBOX_RELAY_APACHE_KAFKA=1
// (so `make test` needs no Java), registers Close, and logs the nodes' log
// tails (LogTail) when the test failed. A package that shares one cluster
// between its tests calls Start in TestMain and Close after m.Run.
package apachekafka
