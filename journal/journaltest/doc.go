// Package journaltest holds test helpers for code built on package journal:
// Recorder, an in-memory fake of the Log's writer side (Append, Sync,
// PutBlob) with func-field hooks for injecting errors; ApplyToDir, a small
// reference implementation of "apply a record to a directory tree"; and
// helpers that damage segment files the way crashes and bad disks do.
package journaltest
