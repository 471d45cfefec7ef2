// Command mreplfs is the one binary of the project: the FUSE mount that sits
// under a Cyrus spool, the peer that replicates it, and the admin tools.
//
// Usage: mreplfs <command> [flags] [args]; mreplfs <command> -h for help.
// Exit codes are a stable ABI: see exitcodes.go and the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// env is what every subcommand gets instead of the process globals, so tests
// can run commands in-process with their own streams.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists every subcommand; each lives in its own file.
var commands = map[string]command{
	"rolemap":  {"build, query and check the account role map (CDB)", runRolemap},
	"classify": {"say which account a path of a Cyrus tree belongs to", runClassify},
	"mount":    {"mount the intercepting filesystem over Cyrus's trees", runMount},
	"status":   {"show (or reload, forget) a running mount through its control socket", runStatus},
	"peer":     {"replicate: ship this server's masters to partners, apply their records here", runPeer},
	"demo":     {"two namespaced servers replicating crosswise, end to end (root)", runDemo},
	"cert":     {"make a test CA and node certificates for the peers' mutual TLS", runCert},
	"promote":  {"make an account's replica its master (swap, nothing shut down)", runPromote},
	"demote":   {"make an account's master its replica (the same swap, named from the master)", runDemote},
	"failover": {"make this server master of accounts whose master is unreachable", runFailover},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "mreplfs: unknown command %q\nTry: mreplfs -h\n", args[0])
		return ExitUsage
	}
	return exitCode(stderr, args[0], cmd.run(ctx, e, args[1:]))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mreplfs <command> [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'mreplfs <command> -h' for a command's flags.")
}

// exitCode maps a subcommand's error to the process exit code and prints it.
func exitCode(stderr io.Writer, name string, err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "mreplfs %s: %s\nTry: mreplfs %s -h\n", name, ue.msg, name)
		return ExitUsage
	}
	var ce *codedError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "mreplfs %s: %v\n", name, ce.err)
		return ce.code
	}
	fmt.Fprintf(stderr, "mreplfs %s: %v\n", name, err)
	return ExitFailure
}

// usageError is a wrong invocation: exit code ExitUsage and a "Try:" hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// codedError carries a specific exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code, err}
}

// newFlagSet makes a subcommand's FlagSet writing its help to e.stderr.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("mreplfs "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: mreplfs %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}
