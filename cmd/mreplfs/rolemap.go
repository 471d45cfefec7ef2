package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"mreplfs/rolemap"
)

// rolemapCommands are the subcommands of "mreplfs rolemap".
var rolemapCommands = []struct{ name, args, summary string }{
	{"build", "SRC.txt DST.cdb", "build the CDB role map from a text source (atomic replace; refused if it\n" +
		"                           would lower an account's epoch, unless the first argument is -force)"},
	{"get", "DB.cdb ACCOUNT", "print an account's role, partner and epoch (exit 3 if absent)"},
	{"dump", "DB.cdb", "print a role map back in the text source format"},
	{"check", "SRC.txt", "validate a text source and print its account count"},
}

func rolemapUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: mreplfs rolemap <build|get|dump|check> [args]")
	for _, c := range rolemapCommands {
		fmt.Fprintf(w, "  %-6s %-16s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nText source: one account per line, 'account role partner epoch';")
	fmt.Fprintln(w, "role master|replica|local, partner host:port or - for local, # comments.")
}

// runRolemap builds, queries and checks the account role map.
func runRolemap(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		rolemapUsage(e.stderr)
		return usagef("missing subcommand (build, get, dump or check)")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		rolemapUsage(e.stderr)
		return flag.ErrHelp
	case "build":
		return rolemapBuild(e, args[1:])
	case "get":
		return rolemapGet(e, args[1:])
	case "dump":
		return rolemapDump(e, args[1:])
	case "check":
		return rolemapCheck(e, args[1:])
	}
	return usagef("unknown subcommand %q (want build, get, dump or check)", args[0])
}

// rolemapArgs parses a subcommand's flags (only -h) and wants n arguments.
func rolemapArgs(e *env, name string, n int, args []string) ([]string, error) {
	var synopsis string
	for _, c := range rolemapCommands {
		if c.name == name {
			synopsis = c.args
		}
	}
	fs := newFlagSet(e, "rolemap "+name, synopsis)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, usagef("%s: %v", name, err)
	}
	if fs.NArg() != n {
		return nil, usagef("%s wants %s, got %d argument(s)", name, synopsis, fs.NArg())
	}
	return fs.Args(), nil
}

func rolemapBuild(e *env, args []string) error {
	force := false
	if len(args) > 0 && (args[0] == "-force" || args[0] == "--force") {
		force, args = true, args[1:]
	}
	a, err := rolemapArgs(e, "build", 2, args)
	if err != nil {
		return err
	}
	recs, err := rolemap.ParseFile(a[0])
	if err != nil {
		return err
	}
	if !force {
		if err := epochsKept(a[1], recs); err != nil {
			return err
		}
	}
	if err := rolemap.Build(a[1], recs); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %d accounts\n", a[1], len(recs))
	return nil
}

// epochsKept refuses a source that would turn an account of the existing
// map at dst back to a lower epoch: a promote or failover changed it since
// the source was written (mreplfs rolemap dump gives the current text).
func epochsKept(dst string, recs []rolemap.Record) error {
	old, err := rolemap.Open(dst)
	if err != nil {
		return nil // no map yet, or one that cannot be read: nothing to keep
	}
	defer old.Close()
	var lower []string
	for _, r := range recs {
		if e, ok := old.Lookup(r.Account); ok && e.Epoch > r.Epoch {
			lower = append(lower, fmt.Sprintf("%s (epoch %d in %s, %d in the source)", r.Account, e.Epoch, dst, r.Epoch))
		}
	}
	if len(lower) == 0 {
		return nil
	}
	more := ""
	if len(lower) > 5 {
		more, lower = fmt.Sprintf(" and %d more", len(lower)-5), lower[:5]
	}
	return withCode(ExitRefused, fmt.Errorf("the source would lower the epoch of %s%s: roles changed since it was written; "+
		"start from 'mreplfs rolemap dump %s', or give -force", strings.Join(lower, ", "), more, dst))
}

func rolemapGet(e *env, args []string) error {
	a, err := rolemapArgs(e, "get", 2, args)
	if err != nil {
		return err
	}
	m, err := rolemap.Open(a[0])
	if err != nil {
		return err
	}
	defer m.Close()
	ent, ok, err := m.Get(a[1])
	if err != nil {
		return err
	}
	if !ok {
		return withCode(ExitNotFound, fmt.Errorf("account %q is not in %s (unknown: treated as not ours)", a[1], a[0]))
	}
	partner := ent.Partner
	if partner == "" {
		partner = "-"
	}
	fmt.Fprintf(e.stdout, "%s %s %d\n", ent.Role, partner, ent.Epoch)
	return nil
}

func rolemapDump(e *env, args []string) error {
	a, err := rolemapArgs(e, "dump", 1, args)
	if err != nil {
		return err
	}
	m, err := rolemap.Open(a[0])
	if err != nil {
		return err
	}
	defer m.Close()
	w := bufio.NewWriter(e.stdout)
	for rec, err := range m.All() {
		if err != nil {
			return err
		}
		if err := rolemap.FormatRecord(w, rec); err != nil {
			return err
		}
	}
	return w.Flush()
}

func rolemapCheck(e *env, args []string) error {
	a, err := rolemapArgs(e, "check", 1, args)
	if err != nil {
		return err
	}
	recs, err := rolemap.ParseFile(a[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %d accounts, OK\n", a[0], len(recs))
	return nil
}
