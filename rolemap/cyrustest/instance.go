package cyrustest

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BinDir is where Debian installs the Cyrus programs.
const BinDir = "/usr/lib/cyrus/bin"

// Layout selects mailbox_legacy_dirs.
type Layout uint8

const (
	UUID   Layout = iota // mailbox_legacy_dirs: no (the 3.6 default): P/uuid/c1/c2/<id>/
	Legacy               // mailbox_legacy_dirs: yes: P/[<h>/]user/alice/...
)

// Options configure an instance. The zero value is the 3.6 default layout
// without a metapartition.
type Options struct {
	Layout      Layout
	Hash        bool     // hashimapspool
	FullDirHash bool     // fulldirhash
	VirtDomains bool     // virtdomains: userid
	Meta        bool     // metapartition-default DIR/meta holding every metadata file
	ExtraConf   []string // extra imapd.conf lines, appended last
	Admins      string   // imapd.conf admins (default "admin")
	// RunDir holds the transient files; default: a fresh temporary
	// directory, removed at cleanup.
	RunDir string
	// Syslog builds (with gcc) an LD_PRELOAD shim that writes Cyrus's
	// syslog to RunDir/syslog: the machine has no /dev/log.
	Syslog       bool
	StartTimeout time.Duration // for the IMAP banner (default 20 s)
}

// Instance is a running Cyrus.
type Instance struct {
	Dir        string // DIR: conf, spool, meta, sieve
	RunDir     string
	Conf       string // imapd.conf path (pass -C to Cyrus tools)
	MasterConf string // cyrus.conf path
	IMAPAddr   string // 127.0.0.1:port
	LMTPAddr   string
	User       string // the user Cyrus runs as
	UID, GID   int
	Opts       Options

	pid     int
	stopped bool
}

// Domain is the mail domain the scenario uses under VirtDomains ("" else).
func (in *Instance) Domain() string {
	if in.Opts.VirtDomains {
		return "example.com"
	}
	return ""
}

// MasterPID returns the pid of the running master (0 once stopped).
func (in *Instance) MasterPID() int {
	if in.stopped {
		return 0
	}
	return in.pid
}

// RequireCyrus fails the test under CI=true when Cyrus cannot run here (not
// root, or Debian's cyrus-imapd not installed), and skips it otherwise.
func RequireCyrus(t testing.TB) {
	t.Helper()
	var why string
	switch {
	case os.Geteuid() != 0:
		why = "needs root (Cyrus runs as user cyrus on chowned dirs)"
	default:
		if _, err := os.Stat(filepath.Join(BinDir, "master")); err != nil {
			why = "Cyrus is not installed (apt-get install cyrus-imapd): " + err.Error()
		} else if _, err := user.Lookup("cyrus"); err != nil {
			why = "no user cyrus: " + err.Error()
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cyrustest: %s (CI=true: not skipping)", why)
	}
	t.Skipf("cyrustest: %s", why)
}

// TempDir returns a fresh test directory that the Cyrus user can enter
// (t.TempDir makes 0700 directories).
func TempDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	if err := makeTraversable(d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Start starts Cyrus on dir and registers its Stop in t.Cleanup. dir is
// created if missing; it and its ancestors inside the temporary directory
// get o+x so the Cyrus user can enter (t.TempDir is fine). It fails the
// test if Cyrus does not come up; RequireCyrus is called first.
func Start(t testing.TB, dir string, o Options) *Instance {
	t.Helper()
	RequireCyrus(t)
	in, err := start(dir, o)
	if in != nil {
		t.Cleanup(func() {
			if err := in.Stop(); err != nil {
				t.Errorf("cyrustest: stop: %v", err)
			}
			if o.RunDir == "" {
				os.RemoveAll(in.RunDir)
			}
		})
	}
	if err != nil {
		if in != nil {
			t.Logf("master.log:\n%s", in.tail("master.log"))
			t.Logf("syslog:\n%s", in.tail("syslog"))
		}
		t.Fatalf("cyrustest: start: %v", err)
	}
	t.Logf("cyrus on %s: imap %s lmtp %s master pid %d rundir %s", in.Dir, in.IMAPAddr, in.LMTPAddr, in.pid, in.RunDir)
	return in
}

func start(dir string, o Options) (*Instance, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	in := &Instance{Dir: dir, Opts: o, RunDir: o.RunDir}
	if in.RunDir == "" {
		if in.RunDir, err = os.MkdirTemp("", "cyrus-run-"); err != nil {
			return nil, err
		}
	}
	in.Conf = filepath.Join(in.RunDir, "imapd.conf")
	in.MasterConf = filepath.Join(in.RunDir, "cyrus.conf")
	if err := in.lookupUser(); err != nil {
		return nil, err
	}
	imapPort, err := freePort()
	if err != nil {
		return nil, err
	}
	lmtpPort, err := freePort()
	for err == nil && lmtpPort == imapPort {
		lmtpPort, err = freePort()
	}
	if err != nil {
		return nil, err
	}
	in.IMAPAddr = "127.0.0.1:" + strconv.Itoa(imapPort)
	in.LMTPAddr = "127.0.0.1:" + strconv.Itoa(lmtpPort)

	dirs := []string{"conf/db", "conf/socket", "spool", "sieve"}
	if o.Meta {
		dirs = append(dirs, "meta")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"proc", "lock", "socket"} {
		if err := os.MkdirAll(filepath.Join(in.RunDir, d), 0o750); err != nil {
			return nil, err
		}
	}
	os.Remove(in.pidFile())
	if err := os.WriteFile(in.Conf, []byte(in.imapdConf()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(in.MasterConf, []byte(in.cyrusConf(imapPort, lmtpPort)), 0o644); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "CYRUS_USER="+in.User, "CYRUS_GROUP="+in.group())
	if o.Syslog {
		so, err := in.buildShim()
		if err != nil {
			return in, err
		}
		env = append(env, "LD_PRELOAD="+so, "CYRUS_SYSLOG_FILE="+filepath.Join(in.RunDir, "syslog"))
		if err := os.WriteFile(filepath.Join(in.RunDir, "syslog"), nil, 0o666); err != nil {
			return in, err
		}
	}
	if os.Geteuid() == 0 {
		// t.TempDir makes 0700 directories: let the Cyrus user through.
		if err := makeTraversable(dir); err != nil {
			return in, err
		}
		trees := []string{"conf", "spool", "sieve"}
		if o.Meta {
			trees = append(trees, "meta")
		}
		for _, d := range trees {
			if err := chownTree(filepath.Join(dir, d), in.UID, in.GID); err != nil {
				return in, err
			}
		}
		if err := chownTree(in.RunDir, in.UID, in.GID); err != nil {
			return in, err
		}
		if err := makeTraversable(in.RunDir); err != nil {
			return in, err
		}
		if err := in.checkAccess(); err != nil {
			return in, err
		}
	}

	out, err := os.Create(filepath.Join(in.RunDir, "master.out"))
	if err != nil {
		return in, err
	}
	defer out.Close()
	// master -d forks; the parent returns once the START entries ran and
	// the listeners are bound. Its output goes to a file: the daemon keeps
	// the descriptors, so a pipe would never reach EOF.
	cmd := exec.Command(filepath.Join(BinDir, "master"), "-C", in.Conf, "-M", in.MasterConf,
		"-p", in.pidFile(), "-d", "-L", filepath.Join(in.RunDir, "master.log"))
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = in.RunDir
	if err := cmd.Run(); err != nil {
		return in, fmt.Errorf("master: %w: %s", err, in.tail("master.out"))
	}
	if err := in.readPID(); err != nil {
		return in, err
	}
	timeout := o.StartTimeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	if err := waitBanner(in.IMAPAddr, timeout); err != nil {
		return in, err
	}
	return in, nil
}

func (in *Instance) pidFile() string { return filepath.Join(in.RunDir, "master.pid") }

func (in *Instance) lookupUser() error {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return err
		}
		in.User = u.Username
		in.UID, in.GID = os.Getuid(), os.Getgid()
		return nil
	}
	u, err := user.Lookup("cyrus")
	if err != nil {
		return fmt.Errorf("cyrus user: %w", err)
	}
	in.User = u.Username
	if in.UID, err = strconv.Atoi(u.Uid); err != nil {
		return err
	}
	if in.GID, err = strconv.Atoi(u.Gid); err != nil {
		return err
	}
	if in.UID == 0 {
		return errors.New("user cyrus is uid 0; Cyrus refuses to run as root")
	}
	return nil
}

func (in *Instance) group() string {
	if g, err := user.LookupGroupId(strconv.Itoa(in.GID)); err == nil {
		return g.Name
	}
	return strconv.Itoa(in.GID)
}

func yn(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (in *Instance) imapdConf() string {
	o, d, r := in.Opts, in.Dir, in.RunDir
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s: %s\n", k, v) }
	b.WriteString("# generated by mreplfs cyrustest for " + d + "\n")
	line("configdirectory", d+"/conf")
	line("defaultpartition", "default")
	line("partition-default", d+"/spool")
	if o.Meta {
		line("metapartition-default", d+"/meta")
		line("metapartition_files", "header index cache expunge squat annotations lock dav archivecache")
	}
	line("sievedir", d+"/sieve")
	line("hashimapspool", yn(o.Hash))
	line("fulldirhash", yn(o.FullDirHash))
	line("mailbox_legacy_dirs", yn(o.Layout == Legacy))
	if o.VirtDomains {
		line("virtdomains", "userid")
	} else {
		line("virtdomains", "off")
	}
	line("unixhierarchysep", "yes")
	line("altnamespace", "no")
	admins := o.Admins
	if admins == "" {
		admins = "admin"
	}
	line("admins", admins)
	line("allowplaintext", "yes")
	line("sasl_mech_list", "PLAIN LOGIN")
	line("sasl_pwcheck_method", "alwaystrue")
	line("proc_path", r+"/proc")
	line("mboxname_lockpath", r+"/lock")
	line("lmtpsocket", r+"/socket/lmtp")
	line("idlesocket", r+"/socket/idle")
	line("notifysocket", r+"/socket/notify")
	line("syslog_prefix", "cyrus-"+filepath.Base(d))
	line("cyrus_user", in.User)
	line("cyrus_group", in.group())
	line("allowusermoves", "yes")
	for _, l := range o.ExtraConf {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func (in *Instance) cyrusConf(imapPort, lmtpPort int) string {
	return fmt.Sprintf(`# generated by mreplfs cyrustest for %[1]s
START {
  recover cmd="ctl_cyrusdb -C %[2]s -r"
}
SERVICES {
  imap cmd="imapd -C %[2]s" listen="127.0.0.1:%[3]d" prefork=0
  lmtp cmd="lmtpd -C %[2]s -a" listen="127.0.0.1:%[4]d" prefork=0
}
EVENTS {
}
`, in.Dir, in.Conf, imapPort, lmtpPort)
}

// checkAccess makes sure the Cyrus user can write DIR's trees (a FUSE DIR
// without allow_other, or a 0700 parent, would stop it).
func (in *Instance) checkAccess() error {
	for _, d := range []string{"conf", "spool"} {
		p := filepath.Join(in.Dir, d)
		cmd := exec.Command("runuser", "-u", in.User, "--", "test", "-w", p, "-a", "-x", p)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("user %s cannot write %s (FUSE mount without allow_other? a 0700 parent dir?): %w %s",
				in.User, p, err, out)
		}
	}
	return nil
}

func (in *Instance) readPID() error {
	b, err := os.ReadFile(in.pidFile())
	if err != nil {
		return fmt.Errorf("master pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("master pid file: %q", b)
	}
	in.pid = pid
	if !in.isOurMaster(pid) {
		return fmt.Errorf("pid %d is not the master of %s", pid, in.Conf)
	}
	return nil
}

// isOurMaster checks /proc/pid/cmdline names our imapd.conf, so Stop never
// signals a recycled pid.
func (in *Instance) isOurMaster(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-C" && args[i+1] == in.Conf {
			return true
		}
	}
	return false
}

// tail returns the last 4 KB of a RunDir file.
func (in *Instance) tail(name string) string {
	b, err := os.ReadFile(filepath.Join(in.RunDir, name))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// Log returns the tail of master.log and, with Options.Syslog, of the
// syslog file: for failure messages.
func (in *Instance) Log() string {
	s := "master.log:\n" + in.tail("master.log")
	if in.Opts.Syslog {
		s += "\nsyslog:\n" + in.tail("syslog")
	}
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitBanner(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "a LOGOUT\r\n")
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "* OK") {
				return nil
			}
			err = fmt.Errorf("banner %q: %v", line, rerr)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no IMAP banner on %s after %v: %w", addr, timeout, last)
}

// chownTree gives root and everything below it to uid:gid, touching only
// what is not theirs yet (so a restart on an intercepting mount changes
// nothing, not even files of accounts it would refuse to change).
func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if int(st.Uid) == uid && int(st.Gid) == gid {
			return nil
		}
		return os.Lchown(p, uid, gid)
	})
}

// makeTraversable adds o+x (and g+x) to dir and those of its ancestors
// that lie inside the temporary directory, so the Cyrus user can reach dir.
func makeTraversable(dir string) error {
	tmp, err := filepath.Abs(os.TempDir())
	if err != nil {
		return err
	}
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp+"/") || d == tmp; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if m := st.Mode().Perm(); m&0o011 != 0o011 {
			if err := os.Chmod(d, m|0o011); err != nil {
				return err
			}
		}
		if d == tmp {
			break
		}
	}
	return nil
}

// Stop sends SIGTERM to master (which SIGTERMs its process group), waits
// until master and the children it had are gone (zombies count as gone:
// PID 1 reaps the re-parented master late), and SIGKILLs what ignores it.
// Stop is idempotent.
func (in *Instance) Stop() error {
	if in.stopped || in.pid == 0 {
		return nil
	}
	in.stopped = true
	if !in.isOurMaster(in.pid) {
		if alive(in.pid) {
			return fmt.Errorf("pid %d is no longer our master; not signalling it", in.pid)
		}
		return nil // already gone
	}
	kids := Children(in.pid)
	if err := syscall.Kill(in.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGTERM master %d: %w", in.pid, err)
	}
	var errs []error
	if !waitGone([]int{in.pid}, 10*time.Second) {
		syscall.Kill(in.pid, syscall.SIGKILL)
		errs = append(errs, fmt.Errorf("master %d ignored SIGTERM for 10 s; killed", in.pid))
	}
	if !waitGone(kids, 2*time.Second) {
		for _, k := range kids {
			if alive(k) {
				syscall.Kill(k, syscall.SIGKILL)
				errs = append(errs, fmt.Errorf("child %d survived master; killed", k))
			}
		}
	}
	os.Remove(in.pidFile())
	return errors.Join(errs...)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state is the field after the ")" closing the command name
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

func waitGone(pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		left := false
		for _, p := range pids {
			if alive(p) {
				left = true
			}
		}
		if !left {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Children lists the pids whose parent is pid (read from /proc).
func Children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

//go:embed syslog-shim.c.in
var shimSource []byte

// buildShim compiles the syslog shim into RunDir (needs gcc).
func (in *Instance) buildShim() (string, error) {
	src := filepath.Join(in.RunDir, "syslog-shim.c")
	so := filepath.Join(in.RunDir, "syslog-shim.so")
	if err := os.WriteFile(src, shimSource, 0o644); err != nil {
		return "", err
	}
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", so, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("syslog shim (Options.Syslog needs gcc): %w: %s", err, out)
	}
	return so, os.Chmod(so, 0o755)
}
