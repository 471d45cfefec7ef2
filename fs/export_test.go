package fs

import (
	"context"
	"syscall"
)

// AsCaller exposes asCaller to the external tests.
func AsCaller(ctx context.Context, op func(retry bool) syscall.Errno) syscall.Errno {
	e, _ := asCaller(ctx, op)
	return e
}
