// Package deploy holds no code: its tests check the files in this directory
// that users install as they are (the Helm chart under helm/, the alert rules
// under prometheus/) against the relay's code and docs.
package deploy
