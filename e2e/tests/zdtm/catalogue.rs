//! The zdtm static tests that are run, with what each needs; and those that are not run in
//! rctr because of a design choice, with the reason.
//!
//! Options come from each test's `.desc` file in CRIU's source (`opts`, `dopts`, `ropts`);
//! `host_ns` reproduces zdtm's "ns" flavor on the host where a test needs its own namespace.

/// How a test names its files (CRIU's test/zdtm/static/Makefile: TST_NOFILE, TST_FILE,
/// TST_DIR, or its own options).
#[derive(Clone, Copy)]
pub enum Args {
    NoFile,
    File,
    Dir,
    Extra(&'static [&'static str]),
}

/// What happens to the test inside rctr.
#[derive(Clone, Copy)]
pub enum InRctr {
    /// Runs, and must pass where raw CRIU passes.
    Run,
    /// Not run: the container design excludes what the test needs (the reason).
    DesignChoice(&'static str),
    /// Runs, and is known to fail in rctr (the cause): reported, not a regression.
    KnownGap(&'static str),
}

#[derive(Clone, Copy)]
pub struct Case {
    pub area: &'static str,
    pub name: &'static str,
    pub args: Args,
    /// CRIU options for dump and restore (the `.desc` file's `opts`), then dump-only, restore-only.
    pub opts: &'static [&'static str],
    pub dopts: &'static [&'static str],
    pub ropts: &'static [&'static str],
    /// `unshare` flags for the raw run (zdtm runs these tests in their own namespace).
    pub host_ns: &'static [&'static str],
    /// Extra `instance start` flags in rctr.
    pub rctr_flags: &'static [&'static str],
    /// Why it is not run with raw CRIU on the host, if it is not.
    pub no_raw: Option<&'static str>,
    pub in_rctr: InRctr,
}

const fn t(area: &'static str, name: &'static str) -> Case {
    Case {
        area,
        name,
        args: Args::NoFile,
        opts: &[],
        dopts: &[],
        ropts: &[],
        host_ns: &[],
        rctr_flags: &[],
        no_raw: None,
        in_rctr: InRctr::Run,
    }
}

impl Case {
    const fn file(self) -> Case {
        Case {
            args: Args::File,
            ..self
        }
    }
    const fn dir(self) -> Case {
        Case {
            args: Args::Dir,
            ..self
        }
    }
    const fn extra(self, args: &'static [&'static str]) -> Case {
        Case {
            args: Args::Extra(args),
            ..self
        }
    }
    const fn opts(self, opts: &'static [&'static str]) -> Case {
        Case { opts, ..self }
    }
    const fn ns(
        self,
        host_ns: &'static [&'static str],
        rctr_flags: &'static [&'static str],
    ) -> Case {
        Case {
            host_ns,
            rctr_flags,
            ..self
        }
    }
    const fn no_raw(self, why: &'static str) -> Case {
        Case {
            no_raw: Some(why),
            ..self
        }
    }
    const fn gap(self, why: &'static str) -> Case {
        Case {
            in_rctr: InRctr::KnownGap(why),
            ..self
        }
    }
    const fn design(self, why: &'static str) -> Case {
        Case {
            in_rctr: InRctr::DesignChoice(why),
            ..self
        }
    }

    /// Whether the restart restores established TCP connections live.
    pub fn tcp_established(&self) -> bool {
        self.opts.contains(&"--tcp-established") && !self.ropts.contains(&"--tcp-close")
    }
}

const TCP: &[&str] = &["--tcp-established"];
const LOCKS: &[&str] = &["--file-locks"];
const IPC: (&[&str], &[&str]) = (&["--ipc"], &[]);
/// zdtm runs these only with namespaces of their own (its "ns" flavor: a pid namespace, a
/// root), which the host run here does not reproduce; an rctr container has them.
const OWN_NS: &str = "zdtm runs it only in namespaces of its own";
const NOT_RUN: &str = "excluded";
const LINK_REMAP: &str = "needs `--link-remap`, which rctr does not pass: CRIU would create \
     hard links to deleted files inside the application's directories at every dump";

pub const CASES: &[Case] = &[
    // Processes, sessions, credentials.
    t("processes", "pid00"),
    t("processes", "wait00"),
    t("processes", "zombie00"),
    t("processes", "zombie01"),
    t("processes", "pstree"),
    t("processes", "session00").no_raw(OWN_NS),
    t("processes", "session01").no_raw(OWN_NS).gap(
        "the test expects its orphans re-parented to pid 1, as zdtm makes the test the init of its pid namespace; in rctr, pid 1 is rctr's init and orphans go to the application (pid 2, a subreaper here)",
    ),
    t("processes", "pdeath_sig"),
    t("processes", "child_subreaper"),
    t("processes", "zombie_leader").no_raw(OWN_NS),
    t("processes", "stopped"),
    t("processes", "selfexe00"),
    t("processes", "groups"),
    t("processes", "rlimits00"),
    t("processes", "cmdlinenv00").extra(&["--arg1=arg1", "--arg2=arg2", "--arg3=arg3"]),
    t("processes", "umask00").extra(&["--mask=0345"]),
    t("processes", "utsname").ns(&["--uts"], &["--hostname", "zdtm"]),
    // Threads, CPU state.
    t("threads", "pthread00"),
    t("threads", "pthread01"),
    t("threads", "futex"),
    t("threads", "clone_fs"),
    t("cpu", "fpu00"),
    t("cpu", "fpu01"),
    t("cpu", "mmx00"),
    t("cpu", "sse00"),
    t("cpu", "sse20"),
    t("cpu", "vdso00"),
    t("cpu", "vdso01"),
    // Signals and timers.
    t("signals", "sigpending"),
    t("signals", "sigaltstack"),
    t("signals", "signalfd00"),
    t("timers", "timers"),
    t("timers", "posix_timers"),
    t("timers", "timerfd"),
    t("timers", "pthread_timers"),
    // Memory.
    t("memory", "maps00").file(),
    t("memory", "maps01"),
    t("memory", "maps02"),
    t("memory", "maps05"),
    t("memory", "maps06").file(),
    t("memory", "mprotect00"),
    t("memory", "cow00"),
    t("memory", "cow01").file(),
    t("memory", "memfd00"),
    t("memory", "memfd01"),
    t("memory", "shmemfd"),
    t("memory", "unlink_mmap00").file(),
    // Files and descriptors.
    t("files", "write_read00").file(),
    t("files", "write_read01").file(),
    t("files", "write_read02").file(),
    t("files", "file_append").file(),
    t("files", "file_shared").file(),
    t("files", "fdt_shared").file(),
    t("files", "link10").file(),
    t("files", "file_attr").file(),
    t("files", "unlink_fstat00").file(),
    t("files", "unlink_fstat02").file(),
    t("files", "cwd00").dir(),
    t("files", "cwd01").dir(),
    t("files", "rmdir_open").dir(),
    t("files", "fd"),
    t("files", "file_fown"),
    t("files", "file_cloexec"),
    t("files", "proc-self"),
    t("files", "eventfs00"),
    t("files", "epoll"),
    t("files", "unlink_fstat03").file().opts(&["--link-remap"]).design(LINK_REMAP),
    t("files", "inotify00").dir().opts(&["--link-remap"]).design(LINK_REMAP),
    // Locks.
    t("locks", "file_locks00").file().opts(LOCKS),
    t("locks", "file_locks01").file().opts(LOCKS),
    t("locks", "file_locks02").file().opts(LOCKS),
    t("locks", "file_locks03").file().opts(LOCKS),
    t("locks", "file_lease00").file().opts(LOCKS),
    // Pipes and FIFOs.
    t("pipes", "pipe00"),
    t("pipes", "pipe01"),
    t("pipes", "pipe02"),
    t("pipes", "fifo").file(),
    t("pipes", "fifo_ro").file(),
    t("pipes", "fifo-ghost").file(),
    t("pipes", "unlink_fifo").file(),
    // Unix sockets.
    t("unix sockets", "sockets00").file(),
    t("unix sockets", "sockets01"),
    t("unix sockets", "sockets02"),
    t("unix sockets", "sockets03").file(),
    t("unix sockets", "sockets_spair"),
    t("unix sockets", "sockets_dgram").file(),
    t("unix sockets", "socket_queues"),
    t("unix sockets", "sk-unix-unconn"),
    t("unix sockets", "sk-unix-rel").file(),
    t("unix sockets", "scm00"),
    t("unix sockets", "del_standalone_un").dir(),
    // Inet and netlink sockets.
    t("inet sockets", "socket_listen"),
    t("inet sockets", "socket_listen6"),
    t("inet sockets", "socket_udp"),
    t("inet sockets", "socket6_udp"),
    t("inet sockets", "unbound_sock"),
    t("inet sockets", "sock_opts00"),
    t("inet sockets", "sock_opts01"),
    t("inet sockets", "socket-tcp").opts(TCP),
    t("inet sockets", "socket-tcp6").opts(TCP),
    t("inet sockets", "socket-tcp-local").opts(TCP),
    t("inet sockets", "socket-tcpbuf").opts(TCP),
    t("inet sockets", "socket-tcp-listen"),
    t("inet sockets", "sk-netlink"),
    // SysV IPC, in its own namespace (zdtm's "ns" flavor; rctr gives each checkpointable
    // container its own).
    t("IPC", "msgque").ns(IPC.0, IPC.1),
    t("IPC", "sem").ns(IPC.0, IPC.1),
    t("IPC", "shm").ns(IPC.0, IPC.1),
    t("IPC", "shm-unaligned").extra(&["--shmem_size=5000"]).ns(IPC.0, IPC.1),
    // Mounts the application makes in the container (zdtm runs these only with a root of
    // their own, which rctr's container is).
    t("mounts", "tempfs").dir().no_raw(OWN_NS),
    t("mounts", "tempfs_ro").dir().no_raw(OWN_NS),
    // Design choices.
    t("devices", "rtc").no_raw(NOT_RUN).design("the container's /dev has no /dev/rtc (minimal /dev by design)"),
    t("devices", "tun").no_raw(NOT_RUN).design("the container's /dev has no /dev/net/tun (minimal /dev by design)"),
    t("cgroups", "cgroup00").dir().opts(&["--manage-cgroups"]).no_raw(NOT_RUN).design(
        "rctr does not create or restore cgroups: the batch system (Slurm) owns the job's cgroup",
    ),
    t("network", "netns").no_raw(NOT_RUN).design(
        "network devices and addresses are the host's, or a fresh --net namespace with loopback only; rctr does not save host network configuration",
    ),
];
