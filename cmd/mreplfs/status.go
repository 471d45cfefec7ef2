package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"mreplfs/fs"
)

const statusSynopsis = `-control SOCKET [-reload | -forget-account ACCOUNT] | -peer-state DIR

Ask a running "mreplfs mount" (through its control socket, JOURNAL/control.sock
by default) for its state and print it as JSON: trees, and under "sync" the
sync-mode counters and every account's appended and replica-applied positions
and degraded state. -reload makes it reload the role map and the config
file's sync_* settings; -forget-account drops every kernel-cached name and page of an
account (after its files were changed in the backing tree).

-peer-state DIR (the peer's state directory) lists the quarantines a
failover left on this server: per account the unreplicated records kept
aside when this node came back as a stale master (account, mailbox, files,
byte ranges; the full report is DIR/quarantine/*/report.json), any fence
cut short (an account held until its tail is set aside), and any role
change prepared and not yet committed or resolved.

Exit status: 0 on success, 1 when the mount cannot be reached or refuses.`

func runStatus(ctx context.Context, e *env, args []string) error {
	fl := newFlagSet(e, "status", statusSynopsis)
	sock := fl.String("control", "", "the mount's control socket")
	reload := fl.Bool("reload", false, "reload the role map and the sync_* settings")
	forget := fl.String("forget-account", "", "forget the cached paths of this account")
	timeout := fl.Duration("timeout", 10*time.Second, "give up after this long")
	peerState := fl.String("peer-state", "", "list the quarantines in this peer state `DIR`")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *peerState != "" && *sock == "" {
		// Everything that can be listed is; the first error is the exit's.
		var first error
		note := func(what string, err error) {
			fmt.Fprintf(e.stdout, "%s: cannot list: %v\n", what, err)
			if first == nil {
				first = err
			}
		}
		reps, dirs, err := listQuarantines(*peerState)
		if err != nil {
			note("quarantines", err)
		} else if len(reps) == 0 {
			fmt.Fprintln(e.stdout, "no quarantine")
		}
		for i := range reps {
			fmt.Fprintf(e.stdout, "%s\n%s\n", dirs[i], formatQuarantine(&reps[i]))
		}
		fences, err := listFences(*peerState)
		if err != nil {
			note("fences", err)
		}
		for _, m := range fences {
			fmt.Fprintf(e.stdout, "fence under way, not finished: %s failed over to %s at epoch %d; held here (no apply, no resync) until its unreplicated tail is set aside; the peer retries, backing off from 1 s to a minute (its log says why it failed)\n",
				m.Account, m.Partner, m.Epoch)
		}
		preps, err := listPrepared(*peerState)
		if err != nil {
			note("role changes", err)
		}
		for _, p := range preps {
			fmt.Fprintf(e.stdout, "role change prepared, not committed: %s %s → %s at epoch %d (deadline %s); the peer resolves it\n",
				p.Account, p.OldRole, p.NewRole, p.NewEpoch, p.Deadline.Format(time.RFC3339))
		}
		return first
	}
	if *sock == "" {
		return usagef("no -control SOCKET given")
	}
	if fl.NArg() > 0 {
		return usagef("unexpected argument %q", fl.Arg(0))
	}
	req := fs.ControlRequest{Cmd: "status"}
	switch {
	case *reload && *forget != "":
		return usagef("give -reload or -forget-account, not both")
	case *reload:
		req.Cmd = "reload"
	case *forget != "":
		req = fs.ControlRequest{Cmd: "forget", Account: *forget}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := fs.ControlCall(ctx, *sock, req)
	if err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("%s: %s", req.Cmd, rep.Error)
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
