package fs

// AsCaller exposes asCaller to the external tests.
var AsCaller = asCaller
