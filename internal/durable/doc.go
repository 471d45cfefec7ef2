// Package durable holds the two small steps every crash-safe state file of
// mreplfs takes: replace a file's content so that a crash leaves the old or
// the new one (WriteFile), and make a directory's entries durable (SyncDir).
package durable
