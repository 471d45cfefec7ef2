// Package peer replicates the journal between servers: a sender per partner
// for the accounts mastered here, a receiver for the accounts replicated here.
// The wire format will be specified here (it is not built yet).
package peer
