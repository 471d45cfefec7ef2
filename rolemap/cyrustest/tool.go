package cyrustest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Tool runs a Cyrus program from BinDir (ctl_mboxlist, cyr_dbtool,
// reconstruct, mbpath, quota ...) with "-C <imapd.conf>" and args, as the
// Cyrus user, and returns its standard output. Cyrus tools refuse to run as
// root, and cyr_dbtool wants absolute db paths (CYRUS.md §7.2.6).
func (in *Instance) Tool(ctx context.Context, name string, args ...string) ([]byte, error) {
	argv := append([]string{filepath.Join(BinDir, name), "-C", in.Conf}, args...)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", in.User, "--"}, argv...)...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	cmd.Dir = in.RunDir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("cyrustest: %s: %w: %s", name, err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}
