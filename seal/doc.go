// Package seal encrypts outbox event values for Kafka and decrypts them for
// consumers: AES-256-GCM with a random 96-bit nonce per record, the event
// id as associated data (a sealed value moved onto another event fails to
// open), and two record headers, HeaderAlgorithm and HeaderKeyID, naming
// how and with which key it was sealed.
//
// Keys come from a small file of key ids and 256-bit keys (see Parse). The
// first key seals; every key opens, so keys rotate without downtime: put a
// new key first and keep the old ones while records sealed with them may
// still be read.
//
// A sealed value is nonce (12 bytes) || ciphertext || tag (16 bytes).
//
// Key material never leaves a Keys: errors name the file and line, never a
// key, and a Keys formats as its key ids only. A Keys is immutable and safe
// for concurrent use.
package seal
