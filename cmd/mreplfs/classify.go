package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"mreplfs/rolemap/classify"
)

const classifySynopsis = `[-root DIR] [-all] [PATH...]

Say which account each PATH of a Cyrus tree belongs to. Prints one line per
path: PATH<TAB>KIND<TAB>ACCOUNT ("-" when the kind has no account).

With -root, DIR holds the trees conf, spool, meta and sieve (configdirectory,
partition-default, metapartition-default, sievedir); their uuid-layout
cyrus.header files are scanned first, so uuid paths resolve to their owners.
PATHs are relative to DIR or absolute under it. -all classifies every file and
directory under DIR instead of PATHs.

Without -root, PATHs are logical: "<tree>/<rel>" such as
"conf/quota/a/user.alice"; uuid mailbox paths are then "pending" (no headers).

Exit status: 0 when every path belongs to a known kind, 1 when some path is
unresolved or pending (or the tree cannot be read), 2 on a usage error.`

func runClassify(ctx context.Context, e *env, args []string) error {
	fl := newFlagSet(e, "classify", classifySynopsis)
	root := fl.String("root", "", "directory holding the Cyrus trees conf, spool, meta, sieve")
	all := fl.Bool("all", false, "classify every file and directory under -root")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	paths := fl.Args()
	switch {
	case *all && *root == "":
		return usagef("-all needs -root")
	case *all && len(paths) > 0:
		return usagef("-all takes no PATH")
	case !*all && len(paths) == 0:
		return usagef("no PATH given (or use -root DIR -all)")
	}
	c := classify.New(classify.Options{Logger: e.log})
	var dir string
	if *root != "" {
		var err error
		if dir, err = filepath.Abs(*root); err != nil {
			return err
		}
		st, err := os.Stat(dir)
		if err != nil {
			return withCode(ExitFailure, fmt.Errorf("-root: %w", err))
		}
		if !st.IsDir() {
			return withCode(ExitFailure, fmt.Errorf("-root: %s is not a directory", dir))
		}
		trees := map[string]string{}
		for _, t := range []string{classify.TreeConf, classify.TreeSpool, classify.TreeMeta, classify.TreeSieve} {
			if st, err := os.Stat(filepath.Join(dir, t)); err == nil && st.IsDir() {
				trees[t] = filepath.Join(dir, t)
			}
		}
		if len(trees) == 0 {
			return withCode(ExitFailure, fmt.Errorf("-root: %s holds none of conf, spool, meta, sieve", dir))
		}
		if err := c.Scan(trees); err != nil {
			// Mailboxes with unusable headers stay pending; say so and go on.
			fmt.Fprintf(e.stderr, "mreplfs classify: warning: %v\n", err)
		}
	}
	bad := 0
	show := func(shown, logical string) {
		r := c.Classify(logical)
		acct := r.Account
		if acct == "" {
			acct = "-"
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", shown, r.Kind, acct)
		if r.Kind == classify.Unresolved || r.Kind == classify.Pending {
			bad++
		}
	}
	if *all {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil || rel == "." {
				return err
			}
			show(rel, rel)
			return nil
		})
		if err != nil {
			return withCode(ExitFailure, err)
		}
	}
	for _, p := range paths {
		logical := p
		if dir != "" && filepath.IsAbs(p) {
			rel, err := filepath.Rel(dir, filepath.Clean(p))
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				fmt.Fprintf(e.stderr, "mreplfs classify: %s is not under %s\n", p, dir)
				bad++
				continue
			}
			logical = rel
		}
		show(p, filepath.ToSlash(logical))
	}
	if bad > 0 {
		return withCode(ExitFailure, fmt.Errorf("%d path(s) unresolved or pending", bad))
	}
	return nil
}
