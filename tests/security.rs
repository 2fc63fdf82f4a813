//! The adversarial probe of issue 19, kept as tests: each finding is
//! reproduced against the twin (in the empty-/sys sandbox of `common::bin`)
//! with a canary, a root-owned file standing in for a victim (`/etc/shadow`,
//! a device node) that must stay byte-identical.

mod common;
use common::*;

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use resetlab::sim::profile::Profile;
use resetlab::sim::Twin;

/// A root-owned file that no command may change.
struct Canary {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const CANARY_TEXT: &[u8] = b"root:$6$canary:19000:0:99999:7:::\n";

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadow");
        fs::write(&path, CANARY_TEXT).unwrap();
        Canary { _dir: dir, path }
    }

    fn assert_intact(&self) {
        let m = fs::symlink_metadata(&self.path).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(
            fs::read(&self.path).unwrap(),
            CANARY_TEXT,
            "the canary changed"
        );
    }
}

fn running() -> Twin {
    Twin::running(Profile::default()).expect("twin with model")
}

fn on(t: &Twin, args: &[&str]) -> Output {
    let s = sysfs_arg(&t.sysfs);
    let mut all = vec!["--sysfs", s.as_str()];
    all.extend_from_slice(args);
    run(&all)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn lock_dir(t: &Twin) -> PathBuf {
    t.root().join("run/resetlab/lock")
}

#[test]
fn a_planted_lock_link_is_refused_and_its_target_kept() {
    let t = running();
    let c = Canary::new();
    // What an unprivileged user could do in a world-writable /run/lock: the
    // old place is now ignored, the new one is refused when planted.
    let old = t.root().join("run/lock/resetlab");
    fs::create_dir_all(&old).unwrap();
    symlink(&c.path, old.join("0000:c5:00.1.lock")).unwrap();
    // The lock is taken (the twin's health verdict is not what is tested).
    let o = on(&t, &["reset", "c5:00.1", "-m", "pm"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "{}{}",
        err(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    c.assert_intact();

    let dir = lock_dir(&t);
    fs::remove_file(dir.join("0000:c5:00.1.lock")).unwrap();
    symlink(&c.path, dir.join("0000:c5:00.1.lock")).unwrap();
    let o = on(&t, &["reset", "c5:00.1", "-m", "pm"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("symbolic link"), "{}", err(&o));
    symlink(&c.path, dir.join("0000:c5:00.0.lock")).unwrap();
    let o = on(&t, &["smu", "c5:00.0", "test"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    c.assert_intact();
}

#[test]
fn a_lock_dir_another_user_could_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = running();
    let dir = lock_dir(&t);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let o = on(&t, &["reset", "c5:00.1", "-m", "pm"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("mode 1777"), "{}", err(&o));
    assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
}

/// A snapshot of the twin, with `extra` entries appended by `add`.
fn snapshot_with(
    t: &Twin,
    add: impl FnOnce(&mut tar::Builder<fs::File>),
) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let clean = d.path().join("clean.tar");
    let o = on(t, &["snapshot", clean.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    let out = d.path().join("planted.tar");
    let mut b = tar::Builder::new(fs::File::create(&out).unwrap());
    let mut ar = tar::Archive::new(fs::File::open(&clean).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        if h.entry_type() == tar::EntryType::Symlink {
            let target = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &path, &target).unwrap();
        } else {
            b.append_data(&mut h, &path, &mut e).unwrap();
        }
    }
    add(&mut b);
    b.finish().unwrap();
    (d, out)
}

fn link_entry(b: &mut tar::Builder<fs::File>, at: &str, to: &Path) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, at, to).unwrap();
}

#[test]
fn a_snapshot_replays_read_only() {
    let t = running();
    let c = Canary::new();
    let (_d, snap) = snapshot_with(&t, |b| {
        link_entry(b, "dev/kmsg", &c.path);
        link_entry(b, "run/resetlab", c.path.parent().unwrap());
    });
    let s = snap.to_str().unwrap();
    // Reading works.
    let o = run(&["--sysfs", s, "list"]);
    assert!(o.status.success(), "{}", err(&o));
    for args in [
        &["reset", "c5:00.1", "-m", "remove_rescan"][..],
        &["reset", "c5:00.0"],
        &["smu", "c5:00.0", "test"],
        &["hook", "100", "post-stop"],
    ] {
        let mut all = vec!["--sysfs", s];
        all.extend_from_slice(args);
        let o = run(&all);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", err(&o));
        assert_eq!(
            err(&o).trim(),
            "resetlab: refused: a snapshot is read-only: use `sim up`",
            "{args:?}"
        );
    }
    // A dry run writes nothing, so it may look.
    let o = run(&["--sysfs", s, "reset", "c5:00.1", "-m", "pm", "--dry-run"]);
    assert!(o.status.success(), "{}", err(&o));
    c.assert_intact();
}

#[test]
fn a_snapshot_with_links_into_the_host_is_refused() {
    let t = running();
    let c = Canary::new();
    for (at, to) in [
        ("sys/bus/pci/devices/0000:c5:00.1/remove", c.path.clone()),
        (
            "sys/bus/pci/evil",
            PathBuf::from("../../../../../../../../../..").join(c.path.strip_prefix("/").unwrap()),
        ),
    ] {
        let (_d, snap) = snapshot_with(&t, |b| link_entry(b, at, &to));
        let o = run(&["--sysfs", snap.to_str().unwrap(), "list"]);
        assert_eq!(o.status.code(), Some(2), "{at}: {}", err(&o));
        assert!(
            err(&o).contains("points outside the snapshot"),
            "{}",
            err(&o)
        );
    }
    c.assert_intact();
}

#[test]
fn a_snapshot_bomb_is_refused_by_its_bounds() {
    let t = running();
    let (_d, snap) = snapshot_with(&t, |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(16 << 30);
        h.set_path("sys/bus/pci/huge").unwrap();
        h.set_cksum();
        // Only the header: the size it claims is refused before any is read.
        b.get_mut().write_all(h.as_bytes()).unwrap();
    });
    let o = run(&["--sysfs", snap.to_str().unwrap(), "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("sys/bus/pci/huge is 17179869184 bytes"),
        "{}",
        err(&o)
    );
    let (_d, snap) = snapshot_with(&t, |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Fifo);
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, "sys/bus/pci/fifo", std::io::empty())
            .unwrap();
    });
    let o = run(&["--sysfs", snap.to_str().unwrap(), "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

#[test]
fn a_fifo_or_device_where_an_attribute_should_be_is_not_read() {
    let t = Twin::new().unwrap();
    let dev = t.sysfs.join("bus/pci/devices/0000:c5:00.1");
    let vendor = fs::canonicalize(dev.join("vendor")).unwrap();
    fs::remove_file(&vendor).unwrap();
    nix::unistd::mkfifo(&vendor, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let cfg = fs::canonicalize(dev.join("config")).unwrap();
    fs::remove_file(&cfg).unwrap();
    symlink("/dev/zero", &cfg).unwrap();
    // Returns (no hang on the FIFO, no endless read of /dev/zero).
    let o = on(&t, &["probe", "c5:00.1"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(err(&o).contains("FIFO"), "{}", err(&o));
}

#[test]
fn files_a_user_names_are_bounded_and_never_block() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let f = fifo.to_str().unwrap();
    let blob = d.path().join("blob");
    fs::write(&blob, b"\xff\xfe not text").unwrap();
    let b = blob.to_str().unwrap();
    for args in [
        vec!["--sim", "run", f, "--dev", "c5:00.0"],
        vec!["--sim", "run", "diff", f, "a", "b"],
        vec!["vbios", "check", "/dev/zero"],
        vec!["vbios", "check", f],
        vec!["--sim", "regs", "bases", "c5:00.0", "--blob", "/dev/zero"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert_eq!(err(&o).lines().count(), 1, "{args:?}: {}", err(&o));
    }
    // --trace: never through a link, never into a FIFO or device.
    let c = Canary::new();
    let link = d.path().join("trace-link");
    symlink(&c.path, &link).unwrap();
    for trace in [link.to_str().unwrap(), f, "/dev/null"] {
        let o = run(&[
            "--sim",
            "reset",
            "c5:00.1",
            "-m",
            "pm",
            "--dry-run",
            "--trace",
            trace,
        ]);
        assert_eq!(o.status.code(), Some(2), "{trace}: {}", err(&o));
    }
    c.assert_intact();
    // Not UTF-8 where text is expected: bad input, not a system error.
    let o = run(&["--sim", "run", b, "--dev", "c5:00.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("not UTF-8"), "{}", err(&o));
}

/// Holds a twin VFIO group node open, as a VM's QEMU does.
fn hold_group(t: &Twin, group: u32) -> fs::File {
    let node = t.root().join("dev/vfio").join(group.to_string());
    if !node.exists() {
        fs::write(&node, b"").unwrap();
    }
    fs::File::open(&node).unwrap()
}

fn config_of(t: &Twin, bdf: &str) -> Vec<u8> {
    fs::read(t.sysfs.join("bus/pci/devices").join(bdf).join("config")).unwrap()
}

#[test]
fn a_bus_reset_never_hits_a_sibling_held_by_another_vm() {
    let t = running();
    let before = config_of(&t, "0000:c6:00.1");
    let held = hold_group(&t, 26);
    let o = on(&t, &["reset", "c6:00.0", "--method", "bus"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(
        err(&o).contains(
            "0000:c6:00.1, which the reset would also hit, has its VFIO group 26 open by pid"
        ),
        "{}",
        err(&o)
    );
    assert_eq!(config_of(&t, "0000:c6:00.1"), before);
    // remove_rescan --slot likewise, on the GPU's audio sibling.
    let held_audio = hold_group(&t, 19);
    let o = on(&t, &["reset", "c5:00.0", "-m", "remove_rescan", "--slot"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("0000:c5:00.1"), "{}", err(&o));
    assert!(t.sysfs.join("bus/pci/devices/0000:c5:00.1").exists());
    drop((held, held_audio));
    let o = on(&t, &["reset", "c6:00.0", "--method", "bus"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

#[test]
fn a_vm_that_opens_the_group_during_the_lock_wait_is_seen() {
    let t = running();
    let host = resetlab::machine::Machine::new(&t.sysfs);
    let bdf: resetlab::pci::Bdf = "c5:00.1".parse().unwrap();
    let lock = resetlab::reset::lock::lock(&host, &bdf, std::time::Duration::ZERO).unwrap();
    let before = config_of(&t, "0000:c5:00.1");
    let s = sysfs_arg(&t.sysfs);
    let child = bin()
        .args([
            "--sysfs",
            &s,
            "reset",
            "c5:00.1",
            "-m",
            "pm",
            "--lock-timeout",
            "60000",
        ])
        .env_remove("RESETLAB_SYSFS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the child has the lock file open: it is waiting.
    let pid = child.id();
    let waiting = || {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| fs::read_link(e.path()).is_ok_and(|p| p == lock.path))
            })
            .unwrap_or(false)
    };
    let mut n = 0;
    while !waiting() {
        n += 1;
        assert!(n < 2000, "the reset never started waiting for the lock");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let vm = hold_group(&t, 19);
    drop(lock);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("VFIO group 19 open by pid"), "{}", err(&o));
    assert_eq!(config_of(&t, "0000:c5:00.1"), before);
    drop(vm);
}

#[test]
fn the_twin_is_never_the_live_machine() {
    let o = run(&["sim", "up", "/"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("is the live machine"), "{}", err(&o));
    // A root whose sys is the machine's sysfs (reached through a link, or
    // mounted there), however it is named.
    let d = tempfile::tempdir().unwrap();
    symlink("/sys", d.path().join("sys")).unwrap();
    for cmd in ["up", "down", "status"] {
        let o = run(&["sim", cmd, d.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "{cmd}: {}", err(&o));
    }
    let host = resetlab::machine::Machine::new(d.path().join("sys"));
    assert!(
        host.is_live(),
        "a /sys reached through a link is the machine"
    );
}

#[test]
fn sim_down_signals_only_that_twins_model() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let up = run(&["sim", "up", root.to_str().unwrap()]);
    assert!(up.status.success(), "{}", err(&up));
    let pidfile = root.join("model/model.pid");
    let model_pid = fs::read_to_string(&pidfile).unwrap();
    // A bystander whose pid is planted in model.pid is not signalled.
    let mut bystander = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    for (planted, code) in [
        ("1".to_string(), 2),
        ("-1".to_string(), 2),
        ("0".to_string(), 2),
        (bystander.id().to_string(), 3),
    ] {
        fs::write(&pidfile, &planted).unwrap();
        let o = run(&["sim", "down", root.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(code), "{planted}: {}", err(&o));
        assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
    }
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    // The real one is stopped; then the pid file is stale and down says so.
    fs::write(&pidfile, &model_pid).unwrap();
    let o = run(&["sim", "down", root.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    fs::write(&pidfile, &model_pid).unwrap();
    let o = run(&["sim", "down", root.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("stale"), "{}", err(&o));
}

#[test]
fn an_unknown_asic_or_bar_is_bad_input_before_anything_runs() {
    let t = running();
    let before = config_of(&t, "0000:c5:00.0");
    for args in [
        &["reset", "c5:00.0", "--asic", "phenix"][..],
        &["reset", "c5:00.0", "--bar", "9"],
        &["reset", "c5:00.0", "--bar", "1"],
    ] {
        let o = on(&t, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(o.stdout.is_empty(), "{args:?}: something ran");
        assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
    }
    assert!(err(&on(&t, &["reset", "c5:00.0", "--asic", "phenix"])).contains("phenix"));
    assert_eq!(config_of(&t, "0000:c5:00.0"), before);
    assert!(t.sysfs.join("bus/pci/devices/0000:c5:00.0").exists());
}

#[test]
fn platform_functions_are_not_reset_without_force() {
    let t = running();
    for bdf in [
        "0000:00:00.0",
        "0000:00:00.2",
        "0000:00:18.3",
        "0000:00:14.0",
    ] {
        let o = on(&t, &["reset", bdf]);
        assert_eq!(o.status.code(), Some(3), "{bdf}: {}", err(&o));
        assert!(err(&o).contains("part of the platform"), "{}", err(&o));
        assert!(t.sysfs.join("bus/pci/devices").join(bdf).exists());
    }
    // An explicit dry run with --force still shows what it would do.
    let o = on(&t, &["reset", "0000:00:00.0", "--force", "--dry-run"]);
    assert!(o.status.success(), "{}", err(&o));
}

#[test]
fn dev_and_selectors_must_agree() {
    let t = Twin::new().unwrap();
    let o = on(&t, &["probe", "c5:00.0", "-s", "c5:00.1"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("does not match"), "{}", err(&o));
    let o = on(&t, &["probe", "c5:00.0", "-d", "1002:1900"]);
    assert!(o.status.success(), "{}", err(&o));
}

#[test]
fn bench_cycles_are_bounded() {
    for n in ["18446744073709551615", "100000000", "0"] {
        let o = run(&["--sim", "bench", "-n", n]);
        assert_eq!(o.status.code(), Some(2), "{n}: {}", err(&o));
        assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
    }
}

#[test]
fn snapshot_never_writes_through_a_planted_partial_link() {
    let t = Twin::new().unwrap();
    let c = Canary::new();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.tar");
    symlink(&c.path, d.path().join("x.partial")).unwrap();
    let o = on(&t, &["snapshot", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    c.assert_intact();
    assert!(!out.exists());
}

#[test]
fn hook_install_stays_beneath_a_twins_root() {
    let t = Twin::new().unwrap();
    let cfg = t.root().join("etc/pve/storage.cfg");
    let escape = "/var/lib/vz/../../../../../../../../../tmp/resetlab-escape";
    fs::write(
        &cfg,
        format!("dir: hooks\n\tpath {escape}\n\tcontent snippets\n"),
    )
    .unwrap();
    let o = on(
        &t,
        &[
            "hook",
            "install",
            "100",
            "--storage",
            "hooks",
            "--print-only",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("'..'"), "{}", err(&o));
    assert!(!Path::new("/tmp/resetlab-escape").exists());
    // A customised shim is not replaced without --force.
    // (`--print-only` writes nothing at all; without it, a twin's install writes the shim
    // beneath the root and runs no `qm`.)
    fs::write(&cfg, "dir: local\n\tpath /var/lib/vz\n\tcontent snippets\n").unwrap();
    let o = on(&t, &["hook", "install", "100"]);
    assert!(o.status.success(), "{}", err(&o));
    let shim = t.root().join("var/lib/vz/snippets/resetlab-hook.sh");
    let mine = format!("{}\n# my own line\n", fs::read_to_string(&shim).unwrap());
    fs::write(&shim, &mine).unwrap();
    let o = on(&t, &["hook", "install", "100"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert_eq!(fs::read_to_string(&shim).unwrap(), mine);
}

#[test]
fn the_hook_survives_its_reader_going_away() {
    let t = running();
    let s = sysfs_arg(&t.sysfs);
    // post-start records the GPU and its audio as the guest's (dirty): post-stop resets them.
    let o = bin()
        .args(["--sysfs", &s, "hook", "100", "post-start"])
        .env_remove("RESETLAB_SYSFS")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The reader is gone before the hook starts (both read ends closed): every line the hook
    // writes, from its first, meets EPIPE.
    let gone = || {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        std::process::Stdio::from(w)
    };
    let mut child = bin()
        .args(["--sysfs", &s, "hook", "100", "post-stop"])
        .env_remove("RESETLAB_SYSFS")
        .stdout(gone())
        .stderr(gone())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        None,
        "killed by signal {:?}",
        status.signal()
    );
    assert_eq!(status.code(), Some(0));
    let kmsg = fs::read_to_string(t.root().join("dev/kmsg")).unwrap();
    assert!(kmsg.contains("0000:c5:00.0 reset by"), "{kmsg}");
    assert!(kmsg.contains("0000:c5:00.1 reset by"), "{kmsg}");
    assert!(kmsg.contains("post-stop: done in"), "{kmsg}");
    for f in ["0000:c5:00.0", "0000:c5:00.1"] {
        assert!(t
            .root()
            .join("run/resetlab")
            .join(format!("{f}.json"))
            .exists());
    }
    // From the very start: a usage error, the first thing a hook can write, is one line that
    // meets EPIPE and the usage exit code, not death by SIGPIPE.
    let status = bin()
        .args(["--sysfs", &s, "hook", "100", "post-stop", "--no-such-flag"])
        .env_remove("RESETLAB_SYSFS")
        .stdout(gone())
        .stderr(gone())
        .status()
        .unwrap();
    assert_eq!(status.signal(), None, "{status:?}");
    assert_eq!(status.code(), Some(2), "{status:?}");
}

/// Starts `reset DEV -m remove_rescan` on a twin whose rescan takes minutes
/// and returns once it has turned drivers_autoprobe off.
fn reset_stuck_in_rescan(t: &Twin) -> std::process::Child {
    let s = sysfs_arg(&t.sysfs);
    let child = bin()
        .args(["--sysfs", &s, "reset", "c5:00.1", "-m", "remove_rescan"])
        .args(["--wait-timeout", "300000"])
        .env_remove("RESETLAB_SYSFS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ap = t.sysfs.join("bus/pci/drivers_autoprobe");
    let mut n = 0;
    while fs::read_to_string(&ap).unwrap().trim() != "0" {
        n += 1;
        assert!(n < 4000, "the reset never turned autoprobe off");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

fn slow_rescan() -> Twin {
    Twin::running(Profile {
        rescan_ms: 600_000,
        ..Profile::default()
    })
    .unwrap()
}

#[test]
fn an_interrupted_remove_rescan_puts_autoprobe_back() {
    let ap = |t: &Twin| {
        fs::read_to_string(t.sysfs.join("bus/pci/drivers_autoprobe"))
            .unwrap()
            .trim()
            .to_string()
    };
    let record = |t: &Twin| t.root().join("run/resetlab/autoprobe.pending");
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let t = slow_rescan();
        let mut child = reset_stuck_in_rescan(&t);
        assert!(record(&t).exists(), "the pending record is written first");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(sig as i32), "{st:?}");
        assert_eq!(ap(&t), "1", "{sig:?} left drivers_autoprobe off");
        assert!(!record(&t).exists());
    }
    // SIGKILL cannot be caught: the record makes the next resetlab put it back.
    let t = slow_rescan();
    let mut child = reset_stuck_in_rescan(&t);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ap(&t), "0");
    assert!(record(&t).exists());
    let o = on(&t, &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "autoprobe")
        .unwrap_or_else(|| panic!("no autoprobe check: {v}"))
        .clone();
    assert_eq!(check["status"], "fail", "{check}");
    let o = on(&t, &["reset", "c5:00.0", "-m", "pm"]);
    assert!(
        err(&o).contains("put ") && err(&o).contains("back to 1"),
        "{}",
        err(&o)
    );
    assert_eq!(ap(&t), "1");
    assert!(!record(&t).exists());
}

#[test]
fn a_device_that_cannot_be_read_does_not_break_the_scan() {
    let t = Twin::new().unwrap();
    let dev = t.sysfs.join("bus/pci/devices/0000:c5:00.1");
    let vendor = fs::canonicalize(dev.join("vendor")).unwrap();
    fs::write(&vendor, "not hex\n").unwrap();
    let o = on(&t, &["list", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("0000:c5:00.1 could not be read"),
        "{}",
        err(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["bdf"] == "0000:c5:00.0"));
    // The device next to it is still reset (dry run); the broken one says why.
    let o = on(
        &t,
        &["reset", "c5:00.0", "-m", "remove_rescan", "--dry-run"],
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = on(&t, &["reset", "c5:00.1", "-m", "pm", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("0000:c5:00.1 could not be read"),
        "{}",
        err(&o)
    );
}

/// A twin with `extra` more functions on the root bus (a large host for
/// scan timings).
fn large_twin(extra: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut specs = resetlab::sim::tree::um880pro();
    let proto = specs
        .iter()
        .find(|s| s.bdf.to_string() == "0000:c6:00.0")
        .unwrap()
        .clone();
    'outer: for bus in 0x20u8..=0xbf {
        for dev in 0..32u8 {
            for func in 0..8u8 {
                if specs.len() >= 40 + extra {
                    break 'outer;
                }
                let mut s = proto.clone();
                s.bdf = resetlab::pci::Bdf::new(0, bus, dev, func);
                s.parent = None;
                s.iommu_group = None;
                specs.push(s);
            }
        }
    }
    resetlab::sim::tree::build(d.path(), &specs).unwrap();
    d
}

/// Figures, not a check (no timing asserts): `cargo test --test security
/// -- --ignored --nocapture scan_figures` [RESETLAB_BEFORE=/path/to/old/resetlab]
/// [RESETLAB_FIGURES_N=extra functions] [RESETLAB_FIGURES_REPS=runs].
#[test]
#[ignore]
fn scan_figures_on_a_large_twin() {
    // All on the root bus: the worst case for a scan that lists each
    // function's parent (RESETLAB_FIGURES_N, default 1000).
    let extra = std::env::var("RESETLAB_FIGURES_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let d = large_twin(extra);
    let s = d.path().join("sys");
    let n = fs::read_dir(s.join("bus/pci/devices")).unwrap().count();
    let mut bins = vec![("now", env!("CARGO_BIN_EXE_resetlab").to_string())];
    if let Ok(b) = std::env::var("RESETLAB_BEFORE") {
        bins.insert(0, ("before", b));
    }
    for (label, b) in bins {
        for args in [
            vec!["reset", "c5:00.1", "-m", "pm", "--dry-run"],
            vec![
                "reset",
                "c5:00.1",
                "-m",
                "kernel,flr,af_flr,pm",
                "--dry-run",
            ],
        ] {
            let reps: usize = std::env::var("RESETLAB_FIGURES_REPS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(3);
            let mut times = vec![];
            for _ in 0..reps.max(1) {
                let t0 = std::time::Instant::now();
                let o = std::process::Command::new(&b)
                    .arg("--sysfs")
                    .arg(&s)
                    .args(&args)
                    .output()
                    .unwrap();
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                assert!(o.status.code().is_some());
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{label}: {n} devices: {args:?}: median {:.0} ms of {}",
                times[times.len() / 2],
                times.len()
            );
        }
    }
}

#[test]
fn messages_and_codes() {
    let t = Twin::new().unwrap();
    // An explicit --policy that is missing is an error, not the defaults.
    let o = on(
        &t,
        &[
            "hook",
            "status",
            "100",
            "--policy",
            "/nonexistent/policy.toml",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("given with --policy"), "{}", err(&o));
    // Duplicate policy keys are an error naming the place.
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("p.toml");
    fs::write(&pol, "[chain]\namd_gpu = [\"flr\"]\namd_gpu = [\"pm\"]\n").unwrap();
    let o = on(
        &t,
        &["hook", "status", "100", "--policy", pol.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains(":3:1: duplicate key"), "{}", err(&o));
    // Control characters from a state record are shown escaped.
    let dir = t.root().join("run/resetlab");
    fs::create_dir_all(&dir).unwrap();
    let rec = serde_json::json!({
        "bdf": "0000:c5:00.0", "state": "dirty", "time": 0, "vmid": 100,
        "last_method": "\u{1b}[2J\u{1b}]0;owned\u{7}smu_mode2\nFAKE LINE",
    });
    fs::write(dir.join("0000:c5:00.0.json"), rec.to_string()).unwrap();
    let o = on(&t, &["hook", "status", "100"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(!out.lines().any(|l| l.starts_with("FAKE LINE")), "{out}");
    assert!(out.contains("\\u{1b}[2J"), "the record was shown: {out}");
}

#[test]
fn sim_temp_dirs_are_removed_on_sigterm_sigint_and_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let entries = |d: &Path| {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("resetlab-"))
            .collect::<Vec<_>>()
    };
    use nix::sys::signal::Signal;
    // Device mode (`-m smu_mode2`): one twin for the run, SIGTERM and SIGINT. VM mode
    // boots a fresh twin per trial: SIGTERM at six points of a trial, also between a
    // twin's mkdir and its registration, leaves none (cleanup::temp_dir).
    let device: &[&str] = &["-m", "smu_mode2"];
    let cases = [(device, Signal::SIGTERM, 0u64), (device, Signal::SIGINT, 0)]
        .into_iter()
        .chain((0..6u64).map(|i| (&[][..], Signal::SIGTERM, i * 53)));
    for (mode, sig, delay_ms) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("bench-out");
        let child = bin()
            .args(["--sim", "bench"])
            .args(mode)
            .args(["-n", "10000", "--out", out.to_str().unwrap()])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut n = 0;
        while !out.join("trials.jsonl").exists() {
            n += 1;
            assert!(n < 4000, "the bench never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if mode == device {
            assert_eq!(entries(tmp.path()).len(), 1, "{:?}", entries(tmp.path()));
        }
        // Land the signal at a different point of a trial each time.
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let st = child.wait_with_output().unwrap().status;
        assert_eq!(st.signal(), Some(sig as i32), "{st:?}");
        assert_eq!(
            entries(tmp.path()),
            Vec::<String>::new(),
            "{sig:?} {delay_ms} ms into a bench ({mode:?}) left a twin"
        );
    }
    // SIGPIPE: the reader of `list` is gone (its end closed before the
    // child starts), so the first write meets EPIPE.
    let tmp = tempfile::tempdir().unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let mut child = bin()
        .args(["--sim", "list"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::from(w))
        .spawn()
        .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGPIPE), "{st:?}");
    assert_eq!(
        entries(tmp.path()),
        Vec::<String>::new(),
        "SIGPIPE left the twin"
    );
}

#[test]
fn a_safety_refusal_by_a_probe_exits_3_on_stderr() {
    let t = running();
    // c5:00.0's slot has ccp and xhci_hcd bound: --slot would remove them.
    let o = on(&t, &["reset", "c5:00.0", "-m", "remove_rescan", "--slot"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(
        err(&o).contains("refused: 0000:c5:00.0: remove_rescan: --slot would also remove"),
        "{}",
        err(&o)
    );
    assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
    assert!(t.sysfs.join("bus/pci/devices/0000:c5:00.2").exists());
}
