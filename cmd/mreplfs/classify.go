package main

import (
	"context"
	"errors"
)

// TODO(skeleton): replaced by the real command.
func runClassify(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
