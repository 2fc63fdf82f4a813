//! Where resetlab finds the machine: every root the program reads or writes,
//! built once from the flags (`--sysfs`, `--sim`, a snapshot file) and passed
//! down. This is the one file that names `/sys`, `/dev`, `/proc`, `/run`,
//! `/etc` and `/boot` (`tests/architecture.rs` holds the code to that), so a
//! twin or an unpacked snapshot can never reach the machine's own by a path
//! some module worked out for itself.
//!
//! Three kinds of root:
//! - the machine's: `/sys` (or any mounted sysfs) and `/` for the rest;
//! - a twin's or an unpacked snapshot's: the tree's parent stands for `/`, so
//!   `<base>/sys`, `<base>/dev`, `<base>/run`, `<base>/proc/cmdline`,
//!   `<base>/etc/pve` (the layout `sim::tree` writes and `snapshot` packs);
//! - the process table, which is always the machine's `/proc`: the processes a
//!   twin's fake QEMU runs as are real ones, and so are the holders of its
//!   VFIO nodes.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The default sysfs root on a real machine.
pub const SYSFS: &str = "/sys";
/// The process table (never re-rooted, see the module comment).
const PROC: &str = "/proc";

/// The Proxmox cluster filesystem (pve-cluster's pmxcfs mount point).
const PVE_ETC: &str = "/etc/pve";
/// resetlab's own configuration: hookscript records and the policy.
const RESETLAB_ETC: &str = "/etc/resetlab";
/// The hook's policy (docs/hook.md).
const POLICY: &str = "/etc/resetlab/hook.toml";
/// qemu-server's monitor sockets and pid files
/// (`PVE::QemuServer::Helpers::qmp_socket`, `var_run_tmpdir`).
const QMP_DIR: &str = "/var/run/qemu-server";
/// kmod's `default_config_paths` (libkmod/libkmod.c), in precedence order.
const MODPROBE_DIRS: [&str; 5] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];
/// modules-load.d(5): the files that load modules at boot.
const ETC_MODULES: &str = "/etc/modules";
const MODULES_LOAD_D: &str = "/etc/modules-load.d";

/// The message every writing command gives on a snapshot.
pub const SNAPSHOT_READ_ONLY: &str = "a snapshot is read-only: use `sim up`";

/// The roots of one run. `sysfs`, `dev` and `run` are fields because every
/// layer reads them; the rest are methods over [`Machine::root`].
#[derive(Debug, Clone)]
pub struct Machine {
    pub sysfs: PathBuf,
    /// `/dev`: VFIO group nodes, `kmsg`.
    pub dev: PathBuf,
    /// The process table (`/proc/<pid>`), for who holds a device node.
    pub proc_root: PathBuf,
    /// `/run`: per-device locks, hook state.
    pub run: PathBuf,
    /// What stands for `/` for everything else: `/etc`, `/boot`, the kernel's
    /// files under `/proc` (command line, release, host name, boot id),
    /// `/lib/modules`, `/usr/share/kvm`, storage paths.
    pub root: PathBuf,
    /// An unpacked snapshot: replayed read-only, every write refused.
    pub read_only: bool,
    live: bool,
}

/// True when `path` is on a mounted sysfs (statfs magic SYSFS_MAGIC,
/// include/uapi/linux/magic.h), wherever it is mounted.
pub fn is_sysfs_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::SYSFS_MAGIC)
        .unwrap_or(false)
}

/// `/proc/<pid>` of the machine's process table.
pub fn process_dir(pid: impl std::fmt::Display) -> PathBuf {
    Path::new(PROC).join(pid.to_string())
}

/// Whether process `pid` runs: it exists and is not a zombie (nobody may reap one in a
/// container without an init, so a zombie counts as gone).
pub fn process_running(pid: impl std::fmt::Display) -> bool {
    fs::read_to_string(process_dir(pid).join("stat")).is_ok_and(|st| {
        // `pid (comm) S …`: the state follows the last `)` (comm may hold one).
        st.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// `/proc/self/exe`: this program, to start a copy of it.
pub fn self_exe() -> PathBuf {
    Path::new(PROC).join("self/exe")
}

/// `/proc/self/fd`: the descriptors this process holds.
pub fn self_fd_dir() -> PathBuf {
    Path::new(PROC).join("self/fd")
}

/// `abs` as a path below `root`; `..` cannot climb out of it.
fn rebase(root: &Path, abs: &Path) -> PathBuf {
    let mut rel = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => {
                rel.pop();
            }
            _ => {}
        }
    }
    root.join(rel)
}

impl Machine {
    /// The machine when `sysfs` is (after resolving links) `/sys` or any
    /// mounted sysfs; a twin otherwise, whose other roots are beside it.
    pub fn new(sysfs: impl Into<PathBuf>) -> Machine {
        let sysfs: PathBuf = sysfs.into();
        let resolved = fs::canonicalize(&sysfs).unwrap_or_else(|_| sysfs.clone());
        let live =
            sysfs == Path::new(SYSFS) || resolved == Path::new(SYSFS) || is_sysfs_mount(&resolved);
        let root = if live {
            PathBuf::from("/")
        } else {
            sysfs
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        Machine {
            dev: root.join("dev"),
            run: root.join("run"),
            proc_root: PathBuf::from(PROC),
            root,
            sysfs,
            read_only: false,
            live,
        }
    }

    /// The machine itself: `/sys`, `/dev`, `/run`, `/`.
    pub fn live() -> Machine {
        Machine::new(SYSFS)
    }

    /// `--sysfs DIR` if given, the machine's `/sys` otherwise.
    pub fn from_flag(sysfs: Option<&Path>) -> Machine {
        Machine::new(sysfs.unwrap_or(Path::new(SYSFS)))
    }

    /// An unpacked snapshot's tree: a twin that refuses every write.
    pub fn snapshot(sysfs: impl Into<PathBuf>) -> Machine {
        let mut m = Machine::new(sysfs);
        m.read_only = true;
        m
    }

    /// The same sysfs, with `/etc`, `/boot` and the kernel's `/proc` files read
    /// under `root` (doctor's `--root`: a copy of a host's files).
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Machine {
        self.root = root.into();
        self
    }

    /// True when this is the machine's own sysfs (however it was named).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Refuses (exit 3) on a read-only machine: the guard of every write path.
    pub fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::refused(SNAPSHOT_READ_ONLY));
        }
        Ok(())
    }

    /// The directory that stands for `/`, when it is not `/` itself (a twin, a snapshot,
    /// `--root`): paths read from config files (a snippet's) are taken beneath it.
    pub fn moved_root(&self) -> Option<&Path> {
        (self.root != Path::new("/")).then_some(self.root.as_path())
    }

    /// `abs`, a path as the host sees it, under this machine's root.
    pub fn under(&self, abs: impl AsRef<Path>) -> PathBuf {
        rebase(&self.root, abs.as_ref())
    }

    // --- the kernel's files ---------------------------------------------------------------

    /// A file of the kernel's under `/proc` (`cmdline`, `sys/kernel/osrelease`, …): the
    /// machine's, or the copy beside a twin's tree.
    pub fn proc_file(&self, rel: &str) -> PathBuf {
        self.kernel_proc().join(rel)
    }

    /// The `/proc` whose files describe this machine's kernel (not its processes).
    pub fn kernel_proc(&self) -> PathBuf {
        self.under(PROC)
    }

    /// `/proc/cmdline`.
    pub fn cmdline_path(&self) -> PathBuf {
        self.proc_file("cmdline")
    }

    /// `/proc/sys/kernel/osrelease` (`uname -r`).
    pub fn osrelease_path(&self) -> PathBuf {
        self.proc_file("sys/kernel/osrelease")
    }

    /// `uname -r`, when readable and not empty.
    pub fn kernel_release(&self) -> Option<String> {
        let p = self.osrelease_path();
        crate::bounded_read::read_text(&p, crate::bounded_read::TEXT_FILE_MAX)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// `/proc/sys/kernel/hostname`.
    pub fn hostname_path(&self) -> PathBuf {
        self.proc_file("sys/kernel/hostname")
    }

    /// `/proc/sys/kernel/random/boot_id`: changes with every boot.
    pub fn boot_id_path(&self) -> PathBuf {
        self.proc_file("sys/kernel/random/boot_id")
    }

    /// `/proc/modules`: the loaded modules.
    pub fn proc_modules(&self) -> PathBuf {
        self.proc_file("modules")
    }

    /// `/boot`: the kernels' build configs.
    pub fn boot(&self) -> PathBuf {
        self.under("/boot")
    }

    /// `/dev/kmsg`: the kernel log.
    pub fn kmsg(&self) -> PathBuf {
        self.dev.join("kmsg")
    }

    // --- configuration ---------------------------------------------------------------------

    /// `/etc/pve`.
    pub fn pve_etc(&self) -> PathBuf {
        self.under(PVE_ETC)
    }

    /// `/etc/resetlab`.
    pub fn resetlab_etc(&self) -> PathBuf {
        self.under(RESETLAB_ETC)
    }

    /// `/etc/resetlab` as the user writes it: the name shown in messages and
    /// written into hookscripts, whatever the root.
    pub fn resetlab_etc_shown() -> &'static Path {
        Path::new(RESETLAB_ETC)
    }

    /// `/etc/resetlab/hook.toml`, the hook's policy, under this machine's root.
    pub fn policy_path(&self) -> PathBuf {
        self.under(POLICY)
    }

    /// The policy's path as the user writes it (`/etc/resetlab/hook.toml`).
    pub fn policy_path_shown() -> &'static Path {
        Path::new(POLICY)
    }

    /// kmod's modprobe.d directories, in precedence order.
    pub fn modprobe_dirs(&self) -> Vec<PathBuf> {
        MODPROBE_DIRS.iter().map(|d| self.under(d)).collect()
    }

    /// `/etc/modules` and the files of `/etc/modules-load.d`, sorted.
    pub fn modules_load_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.under(ETC_MODULES)];
        if let Ok(rd) = fs::read_dir(self.under(MODULES_LOAD_D)) {
            let mut more: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            more.sort();
            files.extend(more);
        }
        files
    }

    /// `/etc/modules` itself.
    pub fn etc_modules(&self) -> PathBuf {
        self.under(ETC_MODULES)
    }

    // --- runtime state ---------------------------------------------------------------------

    /// `/run/resetlab`: the hook's per-device state.
    pub fn state_dir(&self) -> PathBuf {
        self.run.join("resetlab")
    }

    /// `/run/resetlab/lock`: the per-device locks (the package's tmpfiles.d entry).
    pub fn lock_dir(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    /// qemu-server's socket directory.
    pub fn qmp_dir(&self) -> PathBuf {
        self.under(QMP_DIR)
    }

    /// The QMP socket of Proxmox VM `vmid`.
    pub fn qmp_socket(&self, vmid: u32) -> PathBuf {
        self.qmp_dir().join(format!("{vmid}.qmp"))
    }

    /// The machine's host name (`/proc/sys/kernel/hostname`), bounded.
    pub fn hostname(&self) -> Result<String> {
        crate::bounded_read::read_text(&self.hostname_path(), crate::bounded_read::TEXT_FILE_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twin_keeps_every_root_beside_its_tree() {
        let m = Machine::new("/tmp/x/sys");
        assert!(!m.is_live());
        assert_eq!(m.dev, Path::new("/tmp/x/dev"));
        assert_eq!(m.run, Path::new("/tmp/x/run"));
        assert_eq!(m.cmdline_path(), Path::new("/tmp/x/proc/cmdline"));
        assert_eq!(m.pve_etc(), Path::new("/tmp/x/etc/pve"));
        assert_eq!(m.policy_path(), Path::new("/tmp/x/etc/resetlab/hook.toml"));
        assert_eq!(m.state_dir(), Path::new("/tmp/x/run/resetlab"));
        assert_eq!(m.lock_dir(), Path::new("/tmp/x/run/resetlab/lock"));
        assert_eq!(
            m.qmp_socket(100),
            Path::new("/tmp/x/var/run/qemu-server/100.qmp")
        );
        assert_eq!(m.kmsg(), Path::new("/tmp/x/dev/kmsg"));
        // Processes are the machine's own, for a twin too.
        assert_eq!(m.proc_root, Path::new("/proc"));
    }

    #[test]
    fn the_live_machine_uses_its_own_roots() {
        let m = Machine::live();
        assert!(m.is_live());
        assert_eq!(m.dev, Path::new("/dev"));
        assert_eq!(m.state_dir(), Path::new("/run/resetlab"));
        assert_eq!(m.pve_etc(), Path::new("/etc/pve"));
        assert_eq!(m.qmp_socket(7), Path::new("/var/run/qemu-server/7.qmp"));
        assert_eq!(m.osrelease_path(), Path::new("/proc/sys/kernel/osrelease"));
    }

    #[test]
    fn a_root_never_escapes() {
        let m = Machine::new("/tmp/x/sys").with_root("/r");
        assert_eq!(m.under("/etc/../x"), PathBuf::from("/r/x"));
        assert_eq!(m.under("/../../etc"), PathBuf::from("/r/etc"));
        // --root moves /etc and /proc's files, not sysfs, /dev or /run.
        assert_eq!(m.sysfs, Path::new("/tmp/x/sys"));
        assert_eq!(m.dev, Path::new("/tmp/x/dev"));
    }

    #[test]
    fn a_snapshot_refuses_writes() {
        let m = Machine::snapshot("/tmp/x/sys");
        let e = m.check_writable().unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        Machine::new("/tmp/x/sys").check_writable().unwrap();
    }
}
