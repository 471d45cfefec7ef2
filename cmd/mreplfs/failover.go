package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
	"time"

	"mreplfs/peer"
	"mreplfs/rolemap"
)

const failoverSynopsis = `-config PEER.CONF [-force] ACCOUNT... | -all-from NODE

Make this server master of replica accounts whose master is unreachable
(DESIGN.md §6): each takes epoch+1 here at once and is writable on this
server's mount. Run it on the replica's server. Records the old master had
not shipped are not lost: when it comes back, its peer learns from the
handshake that its epoch is stale, makes the account a replica there, moves
its unreplicated changes aside into a quarantine area (listed by
"mreplfs status -peer-state DIR" and in a report file), and resyncs the
account from the new master.

-all-from NODE takes over every account this server replicates from NODE.
It refuses an account whose master answers (use promote), unless -force.

Exit status: 0 done, 6 refused, 1 failed, 2 usage.`

func runFailover(ctx context.Context, e *env, args []string) error {
	fl := newFlagSet(e, "failover", failoverSynopsis)
	cfgPath := fl.String("config", "", "this server's peer config (required)")
	allFrom := fl.String("all-from", "", "take over every account replicated here from `NODE`")
	force := fl.Bool("force", false, "take over even if the master answers")
	probe := fl.Duration("probe", time.Second, "how long to try reaching the master")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *cfgPath == "" {
		return usagef("need -config PEER.CONF")
	}
	if (*allFrom == "") == (fl.NArg() == 0) {
		return usagef("give ACCOUNT... or -all-from NODE")
	}
	cfg, err := loadPeerConfig(*cfgPath)
	if err != nil {
		return err
	}
	accounts := fl.Args()
	if *allFrom != "" {
		if *allFrom == cfg.node || *allFrom == cfg.listen {
			return usagef("-all-from names this server; run failover on the surviving one")
		}
		if accounts, err = mastersOn(cfg, *allFrom); err != nil {
			return err
		}
		sort.Strings(accounts)
		fmt.Fprintf(e.stdout, "failover -all-from %s: %d account(s)\n", *allFrom, len(accounts))
	}
	m, err := rolemap.Open(cfg.roles)
	if err != nil {
		return withCode(ExitFailure, err)
	}
	entries := map[string]rolemap.Entry{}
	for _, a := range accounts {
		e, found, err := m.Get(a)
		if err != nil {
			m.Close()
			return withCode(ExitFailure, err)
		}
		if !found {
			m.Close()
			return withCode(ExitNotFound, fmt.Errorf("%s is not in the role map of %s", a, cfg.node))
		}
		entries[a] = e
	}
	m.Close()

	co := newCoordinator(cfg, swapOptions{timeout: 10 * time.Second})
	co.out = e.stdout
	defer co.close()
	var first error
	up := map[string]bool{} // partner address → answered
	for _, a := range accounts {
		start := time.Now()
		en := entries[a]
		if en.Role != rolemap.Replica {
			err := withCode(ExitRefused, fmt.Errorf("%s is %s on %s, not replica: run failover on its replica's server", a, en.Role, cfg.node))
			fmt.Fprintf(e.stdout, "failover %s: refused: %v\n", a, err)
			first = cmp(first, err)
			continue
		}
		if !*force {
			alive, seen := up[en.Partner]
			if !seen {
				pctx, cancel := context.WithTimeout(ctx, *probe)
				c, err := cfg.dialAdmin(pctx, en.Partner)
				if err == nil {
					_, err = c.Call(pctx, peer.AdminRequest{Op: "query", Account: a})
					c.Close()
				}
				cancel()
				alive = err == nil
				up[en.Partner] = alive
			}
			if alive {
				err := withCode(ExitRefused, fmt.Errorf("the master of %s (%s) answers: use promote, or -force", a, en.Partner))
				fmt.Fprintf(e.stdout, "failover %s: refused: %v\n", a, err)
				first = cmp(first, err)
				continue
			}
		}
		rep, err := co.call(ctx, cfg.listen, peer.AdminRequest{Op: "takeover", Account: a})
		if err != nil {
			fmt.Fprintf(e.stdout, "failover %s: %v\n", a, err)
			first = cmp(first, err)
			continue
		}
		fmt.Fprintf(e.stdout, "failover %s: %s is master at epoch %d after %v (it had applied the old master's records through %d)\n",
			a, cfg.node, rep.Uint("epoch"), time.Since(start).Round(10*time.Microsecond), rep.Uint("applied"))
	}
	return first
}

// cmp keeps the first error.
func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
