//! `resetlab doctor` against a fake Proxmox host: the twin's sysfs plus a temp root with the
//! seed's `/proc/cmdline`, `/etc/modules`, `/etc/modprobe.d/passthrough.conf`, ROMs in
//! `/usr/share/kvm`, and an `/etc/pve` with the seed's VM 100. Each test changes one thing and
//! looks at the verdict of the check it concerns. Nothing outside the temp dirs is read.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use resetlab::amd::vbios;
use resetlab::doctor::{
    self, glob_match, kconfig_value, parse_lockdown, parse_modules_alias, parse_vfio_ids, Check,
    Cmdline, DoctorOptions, ModprobeConf, Status,
};
use resetlab::sim::rom::build_rom;
use resetlab::sim::Twin;

const RELEASE: &str = "6.8.12-4-pve";

/// The seed's `qm config 100`.
const SEED_VM_100: &str = resetlab::sim::seed::VM_100_CONF;

const SEED_STORAGE_CFG: &str = resetlab::sim::seed::STORAGE_CFG;

/// The seed's `/etc/modprobe.d/passthrough.conf` (abridged to the modules the aliases below
/// name, plus a few of the others).
const SEED_PASSTHROUGH_CONF: &str = "\
# don't load driver for iGPU and sound devices
blacklist amdgpu
blacklist radeon
blacklist snd_sof_amd_acp63
blacklist snd_sof_pci
blacklist snd_hda_intel
blacklist snd_pci_ps
blacklist snd_acp_pci
blacklist snd_pci_acp6x

# load vfio-pci driver instead
options vfio-pci ids=1002:1900,1002:1640,1022:15e2,1022:15e3
";

/// `modules.alias` lines as `scripts/mod/file2alias.c` writes them, for the drivers that match
/// the twin's c5:00.x functions (amdgpu's class entries, HDA, the ACP, xhci, ccp).
const MODULES_ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001002d*sv*sd*bc03sc00i00* amdgpu
alias pci:v00001002d*sv*sd*bc03sc80i00* amdgpu
alias pci:v00001002d00001640sv*sd*bc*sc*i* snd_hda_intel
alias pci:v00001022d000015E3sv*sd*bc*sc*i* snd_hda_intel
alias pci:v00001022d000015E2sv*sd*bc04sc80i00* snd_pci_ps
alias pci:v00001022d000015E2sv*sd*bc04sc80i00* snd_sof_amd_acp63
alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
alias pci:v00001022d000015C7sv*sd*bc*sc*i* ccp
alias usb:v062Ap4101d*dc*dsc*dp*ic*isc*ip*in* usbhid
alias symbol:foo bar
";

const HOOK: &str = "#!/usr/bin/bash\nexec /usr/local/bin/resetlab hook \"$@\"\n";

/// A fake host: the twin's sysfs and a root tree; both live as long as this does.
struct Fake {
    twin: Twin,
    root: tempfile::TempDir,
}

fn write(p: &Path, text: impl AsRef<[u8]>) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

impl Fake {
    /// The seed's host, set up as the field report says.
    fn seed() -> Fake {
        let twin = Twin::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let f = Fake { twin, root };
        let s = f.sysfs();
        write(
            &s.join("kernel/security/lockdown"),
            "[none] integrity confidentiality\n",
        );
        for m in ["vfio", "vfio_iommu_type1", "vfio_pci"] {
            fs::create_dir_all(s.join("module").join(m).join("parameters")).unwrap();
        }
        f.put(
            "proc/cmdline",
            "BOOT_IMAGE=/boot/vmlinuz-6.8.12-4-pve root=/dev/mapper/pve-root ro quiet iommu=pt\n",
        );
        f.put("proc/sys/kernel/osrelease", format!("{RELEASE}\n"));
        f.put("proc/sys/kernel/hostname", "d12pve\n");
        f.put(
            &format!("boot/config-{RELEASE}"),
            "CONFIG_STRICT_DEVMEM=y\nCONFIG_IO_STRICT_DEVMEM=y\n",
        );
        f.put(
            "etc/modules",
            "vfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n",
        );
        f.put("etc/modprobe.d/passthrough.conf", SEED_PASSTHROUGH_CONF);
        f.put(
            &format!("lib/modules/{RELEASE}/modules.alias"),
            MODULES_ALIAS,
        );
        // The VBIOS as the seed dumped it: the image in the twin's VFCT table.
        let vfct = fs::read(s.join("firmware/acpi/tables/VFCT")).unwrap();
        let image = vbios::parse_vfct(&vfct).unwrap().images.remove(0).content;
        f.put("usr/share/kvm/vbios_1002_1900.bin", image);
        // A GOP driver ROM (legacy + EFI image) for the GPU, set on the audio function.
        f.put(
            "usr/share/kvm/AMDGopDriver_8845hs.rom",
            build_rom(0x1002, 0x1900, true),
        );
        f.put("etc/pve/qemu-server/100.conf", SEED_VM_100);
        f.put("etc/pve/storage.cfg", SEED_STORAGE_CFG);
        f.put("var/lib/vz/snippets/vm100-hooks.sh", HOOK);
        f.chmod("var/lib/vz/snippets/vm100-hooks.sh", 0o755);
        // The initramfs was rebuilt after the modprobe configuration was written.
        let old = SystemTime::now() - Duration::from_secs(3600);
        set_mtime(&f.path("etc/modprobe.d/passthrough.conf"), old);
        set_mtime(&f.path("etc/modules"), old);
        f.put(&format!("boot/initrd.img-{RELEASE}"), "initramfs");
        f
    }

    fn sysfs(&self) -> PathBuf {
        self.twin.sysfs.clone()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn put(&self, rel: &str, text: impl AsRef<[u8]>) {
        write(&self.path(rel), text);
    }

    fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let p = self.path(rel);
        let t = fs::read_to_string(&p).unwrap();
        fs::write(&p, f(t)).unwrap();
    }

    fn vm(&self, f: impl FnOnce(String) -> String) {
        self.edit("etc/pve/qemu-server/100.conf", f);
    }

    fn dev_dir(&self, bdf: &str) -> PathBuf {
        fs::canonicalize(self.sysfs().join("bus/pci/devices").join(bdf)).unwrap()
    }

    /// Bind `bdf` to `driver` (or unbind it) in the twin's tree.
    fn rebind(&self, bdf: &str, driver: Option<&str>) {
        let link = self.dev_dir(bdf).join("driver");
        let _ = fs::remove_file(&link);
        if let Some(d) = driver {
            let ddir = self.sysfs().join("bus/pci/drivers").join(d);
            fs::create_dir_all(&ddir).unwrap();
            symlink(&ddir, &link).unwrap();
        }
    }

    /// Put `bdf` into IOMMU group `g` as well (as a group without ACS would).
    fn join_group(&self, bdf: &str, g: u32) {
        let link = self
            .sysfs()
            .join("kernel/iommu_groups")
            .join(g.to_string())
            .join("devices")
            .join(bdf);
        symlink(self.dev_dir(bdf), link).unwrap();
    }

    fn options(&self, vmid: Option<u32>) -> DoctorOptions {
        let mut o = DoctorOptions::new(self.sysfs(), self.root.path());
        o.vmid = vmid;
        o
    }

    fn run(&self, vmid: Option<u32>) -> Vec<Check> {
        doctor::doctor(self.options(vmid))
    }
}

/// The checks named `name` (any subject).
fn named<'a>(checks: &'a [Check], name: &str) -> Vec<&'a Check> {
    checks.iter().filter(|c| c.name == name).collect()
}

/// The one check `name` about `subject` (`None`: the check has no subject).
fn one<'a>(checks: &'a [Check], name: &str, subject: Option<&str>) -> &'a Check {
    let v: Vec<&Check> = checks
        .iter()
        .filter(|c| c.name == name && c.subject.as_deref() == subject)
        .collect();
    assert_eq!(v.len(), 1, "{name} {subject:?} in {checks:#?}");
    v[0]
}

fn status(checks: &[Check], name: &str, subject: Option<&str>) -> Status {
    one(checks, name, subject).status
}

const IGPU: &str = "0000:c5:00.0";
const HDMI: &str = "0000:c5:00.1";

#[test]
fn the_seed_host_passes_with_two_warnings_its_own_hookscript_and_strict_devmem() {
    let f = Fake::seed();
    let checks = f.run(Some(100));
    let not_pass: Vec<String> = checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .map(|c| c.label())
        .collect();
    assert_eq!(
        not_pass,
        vec!["hookscript".to_string(), "strict-devmem".to_string()],
        "{checks:#?}"
    );
    // The seed's hookscript is a script of its own, not resetlab's shim: named in the warning.
    let h = one(&checks, "hookscript", None);
    assert!(
        h.detail.contains("local:snippets/vm100-hooks.sh"),
        "{}",
        h.detail
    );
    assert!(h.detail.contains("not resetlab's"), "{}", h.detail);
    // Its checks of resetlab's hook do not apply to someone else's script.
    for name in ["hook-binary", "hook-policy", "hook-chain"] {
        assert!(named(&checks, name).is_empty(), "{name}: {checks:#?}");
    }
    assert!(doctor::all_ok(&checks));
    // Every VM-specific check ran, for both hostpci entries.
    for (name, n) in [
        ("vm-config", 1),
        ("hostpci-present", 2),
        ("vfio-bound", 2),
        ("iommu-group", 2),
        ("boot-claim", 2),
        ("initramfs", 1),
        ("host-functions", 2),
        ("romfile", 2),
        ("hookscript", 1),
        ("vga", 1),
        ("lockdown", 1),
    ] {
        assert_eq!(named(&checks, name).len(), n, "{name}: {checks:#?}");
    }
    // The GOP driver on the audio function is recognised as the seed's trick.
    let gop = one(&checks, "romfile", Some("hostpci1"));
    assert!(
        gop.detail.contains("EFI driver for the VM's GPU c5:00.0"),
        "{}",
        gop.detail
    );
    // The boot-claim detail names the file and line of the ids= and the blacklist.
    let bc = one(&checks, "boot-claim", Some(IGPU));
    assert!(bc.detail.contains("passthrough.conf:12"), "{}", bc.detail);
    assert!(bc.detail.contains("blacklist amdgpu"), "{}", bc.detail);
}

#[test]
fn without_vmid_every_vfio_device_and_amd_gpu_is_checked() {
    let f = Fake::seed();
    let checks = f.run(None);
    assert!(named(&checks, "vm-config").is_empty());
    assert!(named(&checks, "romfile").is_empty());
    assert!(named(&checks, "hookscript").is_empty());
    let subjects: Vec<&str> = named(&checks, "vfio-bound")
        .iter()
        .filter_map(|c| c.subject.as_deref())
        .collect();
    assert_eq!(subjects, vec![IGPU, HDMI, "0000:c5:00.5", "0000:c5:00.6"]);
    // The ACP (c5:00.5) is covered by ids= and both its drivers are blacklisted.
    assert_eq!(
        status(&checks, "boot-claim", Some("0000:c5:00.5")),
        Status::Pass
    );
    assert_eq!(status(&checks, "devices", None), Status::Pass);
}

#[test]
fn no_device_to_check_is_a_warning() {
    let f = Fake::seed();
    for b in [IGPU, HDMI, "0000:c5:00.5", "0000:c5:00.6"] {
        f.rebind(b, None);
    }
    // The GPU and its audio are still AMD GPU/audio devices: they are checked, unbound.
    let checks = f.run(None);
    assert_eq!(status(&checks, "vfio-bound", Some(IGPU)), Status::Warn);
    assert!(named(&checks, "vfio-bound").len() == 2);
    // With no AMD GPU either, nothing is left to check.
    fs::remove_file(f.sysfs().join("bus/pci/devices").join(IGPU)).unwrap();
    fs::remove_file(f.sysfs().join("bus/pci/devices").join(HDMI)).unwrap();
    let checks = f.run(None);
    assert_eq!(status(&checks, "devices", None), Status::Warn);
}

#[test]
fn iommu_off_fails() {
    let f = Fake::seed();
    let groups = f.sysfs().join("kernel/iommu_groups");
    fs::rename(&groups, f.sysfs().join("kernel/iommu_groups.off")).unwrap();
    fs::create_dir(&groups).unwrap();
    f.put("proc/cmdline", "quiet amd_iommu=off\n");
    let checks = f.run(None);
    let c = one(&checks, "iommu", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("amd_iommu=off"), "{}", c.detail);
    assert!(c.fix.as_deref().unwrap().contains("firmware"));
    assert!(!doctor::all_ok(&checks));
}

#[test]
fn iommu_pt_missing_or_unreadable_warns() {
    let f = Fake::seed();
    assert_eq!(status(&f.run(None), "iommu-pt", None), Status::Pass);
    f.put("proc/cmdline", "quiet iommu=pt iommu=nopt\n");
    let checks = f.run(None);
    let c = one(&checks, "iommu-pt", None);
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.starts_with("iommu=nopt"), "{}", c.detail);
    // Another iommu= option later does not undo pt.
    f.put("proc/cmdline", "quiet iommu=pt iommu=soft\n");
    assert_eq!(status(&f.run(None), "iommu-pt", None), Status::Pass);
    fs::remove_file(f.path("proc/cmdline")).unwrap();
    assert_eq!(status(&f.run(None), "iommu-pt", None), Status::Warn);
}

#[test]
fn vfio_modules_missing_fails_and_proc_modules_counts() {
    let f = Fake::seed();
    fs::remove_dir_all(f.sysfs().join("module/vfio_pci")).unwrap();
    let checks = f.run(None);
    let c = one(&checks, "vfio-modules", None);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.detail, "not loaded: vfio_pci");
    f.put(
        "proc/modules",
        "vfio_pci 16384 0 - Live 0x0000000000000000\nvfio_pci_core 94208 1 vfio_pci, Live 0x0\n",
    );
    let c = f.run(None);
    assert_eq!(status(&c, "vfio-modules", None), Status::Pass);
    // Loaded but not in /etc/modules: still a pass, the detail says so.
    f.put("etc/modules", "# nothing\n");
    let c = f.run(None);
    let v = one(&c, "vfio-modules", None);
    assert_eq!(v.status, Status::Pass);
    assert!(v.detail.contains("not in /etc/modules"), "{}", v.detail);
}

#[test]
fn vm_config_missing_fails_and_without_hostpci_warns() {
    let f = Fake::seed();
    let checks = f.run(Some(101));
    let c = one(&checks, "vm-config", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("101.conf"), "{}", c.detail);
    // No other VM check runs on a config that did not load.
    assert!(named(&checks, "romfile").is_empty());
    f.vm(|t| {
        t.lines()
            .filter(|l| !l.starts_with("hostpci"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    assert_eq!(status(&f.run(Some(100)), "vm-config", None), Status::Warn);
    // A broken line names the file and line.
    f.vm(|t| t + "hostpci0: 0000:c5:00.0,pcie=maybe\n");
    let checks = f.run(Some(100));
    let c = one(&checks, "vm-config", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("100.conf:"), "{}", c.detail);
}

#[test]
fn a_vm_on_another_cluster_node_is_named_with_where_to_run_doctor() {
    let f = Fake::seed();
    fs::remove_file(f.path("etc/pve/qemu-server/100.conf")).unwrap();
    f.put("etc/pve/nodes/pve2/qemu-server/100.conf", SEED_VM_100);
    let checks = f.run(Some(100));
    let c = one(&checks, "vm-config", None);
    assert_eq!(c.status, Status::Warn, "{}", c.detail);
    assert!(c.detail.contains("VM 100 is on node pve2"), "{}", c.detail);
    assert_eq!(
        c.fix.as_deref(),
        Some("run resetlab doctor --vmid 100 on pve2 (and on each node it can migrate to)")
    );
}

#[test]
fn a_hostpci_function_not_on_the_bus_fails() {
    let f = Fake::seed();
    f.vm(|t| t.replace("hostpci1: 0000:c5:00.1", "hostpci1: 0000:c5:00.7"));
    let checks = f.run(Some(100));
    assert_eq!(status(&checks, "hostpci-present", Some(IGPU)), Status::Pass);
    let c = one(&checks, "hostpci-present", Some("0000:c5:00.7"));
    assert_eq!(c.status, Status::Fail);
    assert!(c.fix.as_deref().unwrap().contains("rescan"));
}

#[test]
fn vfio_bound_pass_warn_fail() {
    let f = Fake::seed();
    f.rebind(HDMI, None);
    f.rebind(IGPU, Some("amdgpu"));
    let checks = f.run(Some(100));
    let hdmi = one(&checks, "vfio-bound", Some(HDMI));
    assert_eq!(hdmi.status, Status::Warn);
    let igpu = one(&checks, "vfio-bound", Some(IGPU));
    assert_eq!(igpu.status, Status::Fail);
    assert!(igpu.detail.contains("amdgpu"), "{}", igpu.detail);
    // driver=keep: Proxmox leaves the driver alone, and so does doctor.
    f.vm(|t| t.replace("x-vga=1,", "x-vga=1,driver=keep,"));
    let checks = f.run(Some(100));
    assert_eq!(status(&checks, "vfio-bound", Some(IGPU)), Status::Pass);
    assert!(named(&checks, "boot-claim")
        .iter()
        .all(|c| c.subject.as_deref() != Some(IGPU)));
}

#[test]
fn iommu_group_shared_with_a_host_driver_fails_with_a_vfio_function_warns() {
    let f = Fake::seed();
    // c5:00.5 (vfio-pci, not in VM 100) in the iGPU's group: it goes along.
    f.join_group("0000:c5:00.5", 18);
    // c5:00.2 (ccp, a host driver) in the audio's group: the group is not viable.
    f.join_group("0000:c5:00.2", 19);
    let checks = f.run(Some(100));
    let g = one(&checks, "iommu-group", Some(IGPU));
    assert_eq!(g.status, Status::Warn);
    assert!(g.detail.contains("c5:00.5 (vfio-pci)"), "{}", g.detail);
    let g = one(&checks, "iommu-group", Some(HDMI));
    assert_eq!(g.status, Status::Fail);
    assert!(g.detail.contains("c5:00.2 (ccp)"), "{}", g.detail);
    assert!(g.detail.contains("not viable"), "{}", g.detail);
    // A member the VM passes too is fine.
    f.vm(|t| t + "hostpci2: 0000:c5:00.5\n");
    assert_eq!(
        status(&f.run(Some(100)), "iommu-group", Some(IGPU)),
        Status::Pass
    );
}

#[test]
fn boot_claim_pass_warn_fail() {
    let f = Fake::seed();
    // amdgpu no longer held back, ids= still there: a race.
    f.edit("etc/modprobe.d/passthrough.conf", |t| {
        t.replace("blacklist amdgpu\n", "")
    });
    let checks = f.run(Some(100));
    let c = one(&checks, "boot-claim", Some(IGPU));
    assert_eq!(c.status, Status::Warn);
    assert!(c
        .fix
        .as_deref()
        .unwrap()
        .contains("softdep amdgpu pre: vfio-pci"));
    assert_eq!(status(&checks, "boot-claim", Some(HDMI)), Status::Pass);
    // A softdep in another file holds it back again.
    f.put(
        "etc/modprobe.d/amdgpu.conf",
        "softdep amdgpu pre: vfio_pci\n",
    );
    assert_eq!(
        status(&f.run(Some(100)), "boot-claim", Some(IGPU)),
        Status::Pass
    );
    // Neither ids= nor a hold: amdgpu takes the iGPU at boot.
    fs::remove_file(f.path("etc/modprobe.d/amdgpu.conf")).unwrap();
    f.edit("etc/modprobe.d/passthrough.conf", |t| {
        t.replace(
            "options vfio-pci ids=1002:1900,1002:1640,1022:15e2,1022:15e3\n",
            "",
        )
    });
    let checks = f.run(Some(100));
    let c = one(&checks, "boot-claim", Some(IGPU));
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.fix
            .as_deref()
            .unwrap()
            .contains("options vfio-pci ids=1002:1900,1002:1640"),
        "{:?}",
        c.fix
    );
    // Held back but no ids=: unbound until Proxmox binds it.
    assert_eq!(status(&checks, "boot-claim", Some(HDMI)), Status::Warn);
    // ids= on the kernel command line and modprobe.blacklist= count too.
    f.put(
        "proc/cmdline",
        "quiet iommu=pt vfio-pci.ids=1002:1900,1002:1640 modprobe.blacklist=amdgpu\n",
    );
    let checks = f.run(Some(100));
    assert_eq!(status(&checks, "boot-claim", Some(IGPU)), Status::Pass);
    assert_eq!(status(&checks, "boot-claim", Some(HDMI)), Status::Pass);
}

#[test]
fn boot_claim_falls_back_to_amdgpu_and_hda_without_modules_alias() {
    let f = Fake::seed();
    fs::remove_dir_all(f.path("lib/modules")).unwrap();
    f.edit("etc/modprobe.d/passthrough.conf", |t| {
        t.replace("blacklist snd_hda_intel\n", "")
    });
    let checks = f.run(Some(100));
    let c = one(&checks, "boot-claim", Some(HDMI));
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.contains("snd_hda_intel"), "{}", c.detail);
    assert_eq!(status(&checks, "boot-claim", Some(IGPU)), Status::Pass);
}

#[test]
fn an_initramfs_older_than_the_modprobe_config_warns() {
    let f = Fake::seed();
    set_mtime(
        &f.path(&format!("boot/initrd.img-{RELEASE}")),
        SystemTime::now() - Duration::from_secs(7200),
    );
    let checks = f.run(None);
    let c = one(&checks, "initramfs", None);
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.contains("passthrough.conf"), "{}", c.detail);
    assert!(c
        .fix
        .as_deref()
        .unwrap()
        .contains("update-initramfs -u -k all"));
    // No initrd for this kernel: nothing to compare.
    fs::remove_file(f.path(&format!("boot/initrd.img-{RELEASE}"))).unwrap();
    assert!(named(&f.run(None), "initramfs").is_empty());
}

#[test]
fn a_whole_slot_entry_sweeping_in_the_host_usb_fails() {
    let f = Fake::seed();
    f.vm(|t| {
        t.replace(
            "hostpci0: 0000:c5:00.0,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin",
            "hostpci0: 0000:c5:00,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin",
        )
        .replace(
            "hostpci1: 0000:c5:00.1,pcie=1,romfile=AMDGopDriver_8845hs.rom\n",
            "",
        )
    });
    let checks = f.run(Some(100));
    let c = one(&checks, "host-functions", Some("hostpci0"));
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("whole slot 0000:c5:00"), "{}", c.detail);
    for s in [
        "c5:00.2 (bound to ccp on the host)",
        "c5:00.3 (a USB controller the host uses, xhci_hcd)",
        "c5:00.4 (a USB controller the host uses, xhci_hcd)",
    ] {
        assert!(c.detail.contains(s), "{s}: {}", c.detail);
    }
    let fix = c.fix.as_deref().unwrap();
    assert!(
        fix.contains("--hostpci0 0000:c5:00.0,pcie=1,romfile=vbios_1002_1900.bin,x-vga=1 --hostpci1 0000:c5:00.1 "),
        "{fix}"
    );
    assert!(!fix.contains("c5:00.3"), "{fix}");
    // ... and are never proposed for vfio-pci ids=.
    assert!(named(&checks, "boot-claim").iter().all(|c| !c
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("15b9")));
    // The whole slot drags the USB functions into the VM's device list.
    assert!(named(&checks, "vfio-bound")
        .iter()
        .any(|v| v.subject.as_deref() == Some("0000:c5:00.3") && v.status == Status::Fail));
}

#[test]
fn a_usb_controller_carrying_the_keyboard_fails() {
    let f = Fake::seed();
    // The seed's keyboard, where dmesg shows it.
    let usb = f.dev_dir("0000:c5:00.3");
    let input = usb.join("usb1/1-2/1-2.1/1-2.1:1.0/0003:062A:4101.0004/input/input9");
    write(&input.join("name"), "MOSART Semi. 2.4G Keyboard Mouse\n");
    fs::create_dir_all(f.sysfs().join("class/input")).unwrap();
    symlink(&input, f.sysfs().join("class/input/input9")).unwrap();
    // Even bound to vfio-pci already: the keyboard is under it now.
    f.rebind("0000:c5:00.3", Some("vfio-pci"));
    f.vm(|t| t + "hostpci2: 0000:c5:00.3\n");
    let checks = f.run(Some(100));
    let c = one(&checks, "host-functions", Some("hostpci2"));
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail
            .contains("input9 'MOSART Semi. 2.4G Keyboard Mouse'"),
        "{}",
        c.detail
    );
    assert!(c.fix.as_deref().unwrap().contains("usb0: host=062a:4101"));
    assert_eq!(
        status(&checks, "host-functions", Some("hostpci0")),
        Status::Pass
    );
}

#[test]
fn romfile_missing_corrupt_or_for_another_device() {
    let f = Fake::seed();
    fs::remove_file(f.path("usr/share/kvm/vbios_1002_1900.bin")).unwrap();
    let checks = f.run(Some(100));
    let c = one(&checks, "romfile", Some("hostpci0"));
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail
            .contains("/usr/share/kvm/vbios_1002_1900.bin does not exist"),
        "{}",
        c.detail
    );

    // Corrupt: the seed ROM with its checksum byte changed.
    let mut bad = build_rom(0x1002, 0x1900, false);
    bad[0x21] ^= 0xff;
    f.put("usr/share/kvm/vbios_1002_1900.bin", &bad);
    let c = f.run(Some(100));
    let c = one(&c, "romfile", Some("hostpci0"));
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("not a valid option ROM"), "{}", c.detail);
    assert!(c.detail.contains("checksum"), "{}", c.detail);

    // A valid VBIOS for the Phoenix1 780M (1002:15bf) on a 1002:1900: the wrong one.
    f.put(
        "usr/share/kvm/vbios_1002_1900.bin",
        build_rom(0x1002, 0x15bf, false),
    );
    let c = f.run(Some(100));
    let c = one(&c, "romfile", Some("hostpci0"));
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("wrong VBIOS"), "{}", c.detail);
    assert!(c.detail.contains("1002:15bf"), "{}", c.detail);

    // vendor-id/device-id overrides are what the guest sees: the ROM now matches.
    f.vm(|t| t.replace("x-vga=1,", "x-vga=1,device-id=0x15bf,"));
    assert_eq!(
        status(&f.run(Some(100)), "romfile", Some("hostpci0")),
        Status::Pass
    );
}

#[test]
fn an_efi_only_rom_for_another_device_warns() {
    let f = Fake::seed();
    // The EFI image alone (the second 1 KiB of a legacy+EFI ROM), for a device the VM lacks.
    let rom = build_rom(0x1002, 0x15bf, true);
    let efi = rom[1024..].to_vec();
    let info = vbios::check_rom(&efi).unwrap();
    assert_eq!(info.images.len(), 1);
    assert_eq!(info.images[0].code_type_name, "EFI");
    f.put("usr/share/kvm/AMDGopDriver_8845hs.rom", efi);
    let checks = f.run(Some(100));
    let c = one(&checks, "romfile", Some("hostpci1"));
    assert_eq!(c.status, Status::Warn, "{}", c.detail);
    assert!(c.detail.contains("EFI-only"), "{}", c.detail);
}

#[test]
fn hookscript_unset_missing_not_executable() {
    let f = Fake::seed();
    f.chmod("var/lib/vz/snippets/vm100-hooks.sh", 0o644);
    let checks = f.run(Some(100));
    let c = one(&checks, "hookscript", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("not executable"), "{}", c.detail);
    assert_eq!(
        c.fix.as_deref(),
        Some("chmod +x /var/lib/vz/snippets/vm100-hooks.sh")
    );

    fs::remove_file(f.path("var/lib/vz/snippets/vm100-hooks.sh")).unwrap();
    let c = f.run(Some(100));
    let c = one(&c, "hookscript", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("does not exist"), "{}", c.detail);

    // On a storage without snippets content.
    f.vm(|t| {
        t.replace(
            "local:snippets/vm100-hooks.sh",
            "tank:snippets/vm100-hooks.sh",
        )
    });
    let c = f.run(Some(100));
    let c = one(&c, "hookscript", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("tank"), "{}", c.detail);

    f.vm(|t| {
        t.lines()
            .filter(|l| !l.starts_with("hookscript"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    assert_eq!(status(&f.run(Some(100)), "hookscript", None), Status::Warn);
}

/// VM 100's hookscript made resetlab's shim (as `hook install 100` leaves it).
fn with_shim(f: &Fake, text: &str) {
    f.put("var/lib/vz/snippets/resetlab-hook.sh", text);
    f.chmod("var/lib/vz/snippets/resetlab-hook.sh", 0o755);
    f.vm(|t| {
        t.replace(
            "local:snippets/vm100-hooks.sh",
            "local:snippets/resetlab-hook.sh",
        )
    });
}

fn put_exe(f: &Fake, rel: &str) {
    f.put(rel, "#!/bin/sh\n");
    f.chmod(rel, 0o755);
}

#[test]
fn resetlabs_shim_passes_only_when_current_and_its_binary_is_on_the_node() {
    use resetlab::hook::install::{OLDER_SHIMS, SHIM};
    let f = Fake::seed();
    with_shim(&f, SHIM);
    let checks = f.run(Some(100));
    assert_eq!(status(&checks, "hookscript", None), Status::Pass);
    let b = one(&checks, "hook-binary", None);
    assert_eq!(b.status, Status::Fail, "{}", b.detail);
    assert!(b.detail.contains("pre-start fails"), "{}", b.detail);
    assert!(!doctor::all_ok(&checks));
    // A copy in /usr/local/bin works through the shim's fallback, but no package upgrades it.
    put_exe(&f, "usr/local/bin/resetlab");
    let c = f.run(Some(100));
    assert_eq!(status(&c, "hook-binary", None), Status::Warn);
    put_exe(&f, "usr/sbin/resetlab");
    let c = f.run(Some(100));
    assert_eq!(status(&c, "hook-binary", None), Status::Pass);
    assert_eq!(status(&c, "hook-policy", None), Status::Pass);
    // No record: installed over no hookscript, nothing to chain.
    assert!(named(&c, "hook-chain").is_empty());
    assert!(doctor::all_ok(&c), "{c:#?}");

    // The shim of an earlier resetlab: outdated.
    with_shim(&f, OLDER_SHIMS[0]);
    let c = f.run(Some(100));
    let h = one(&c, "hookscript", None);
    assert_eq!(h.status, Status::Warn);
    assert!(h.detail.contains("older resetlab"), "{}", h.detail);
    assert_eq!(
        h.fix.as_deref(),
        Some("update it: resetlab hook install 100")
    );
}

#[test]
fn a_policy_that_does_not_parse_fails_and_names_the_key() {
    let f = Fake::seed();
    with_shim(&f, resetlab::hook::install::SHIM);
    put_exe(&f, "usr/sbin/resetlab");
    f.put(
        "etc/resetlab/hook.toml",
        "resetlab = \"2.0\"\n[phase.post-stop]\nactions = [\"reset\"]\nverify = true\n",
    );
    let c = f.run(Some(100));
    let p = one(&c, "hook-policy", None);
    assert_eq!(p.status, Status::Fail);
    assert!(p.detail.contains("verify"), "{}", p.detail);
    assert!(
        p.detail.contains("written for resetlab 2.0"),
        "{}",
        p.detail
    );
}

#[test]
fn a_chained_hookscript_missing_on_this_node_fails() {
    let f = Fake::seed();
    with_shim(&f, resetlab::hook::install::SHIM);
    put_exe(&f, "usr/sbin/resetlab");
    f.put(
        "etc/resetlab/hookscripts/100.toml",
        "vmid = 100\ninstalled = \"local:snippets/resetlab-hook.sh\"\nprevious = \"local:snippets/vm100-hooks.sh\"\nchain = true\nchain_timeout_s = 60.0\n",
    );
    let c = f.run(Some(100));
    assert_eq!(status(&c, "hook-chain", None), Status::Pass, "{c:#?}");
    fs::remove_file(f.path("var/lib/vz/snippets/vm100-hooks.sh")).unwrap();
    let c = f.run(Some(100));
    let h = one(&c, "hook-chain", None);
    assert_eq!(h.status, Status::Fail);
    assert!(
        h.detail.contains("missing or not executable on this node"),
        "{}",
        h.detail
    );
}

#[test]
fn vga_and_x_vga_consistency() {
    let f = Fake::seed();
    f.vm(|t| t.replace("vga: none", "vga: std"));
    let c = f.run(Some(100));
    let c = one(&c, "vga", None);
    assert_eq!(c.status, Status::Warn);
    assert_eq!(c.fix.as_deref(), Some("qm set 100 --vga none"));

    f.vm(|t| t.replace("vga: std", "vga: none").replace("x-vga=1,", ""));
    let c = f.run(Some(100));
    let c = one(&c, "vga", None);
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.contains("no x-vga=1"), "{}", c.detail);

    f.vm(|t| {
        t.replace(
            "hostpci1: 0000:c5:00.1,pcie=1,",
            "hostpci1: 0000:c5:00.1,pcie=1,x-vga=1,",
        )
    });
    let c = f.run(Some(100));
    let c = one(&c, "vga", None);
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.contains("not a display device"), "{}", c.detail);
}

#[test]
fn lockdown_integrity_fails_and_absent_passes() {
    let f = Fake::seed();
    f.put("proc/cmdline", "quiet iommu=pt\n");
    write(
        &f.sysfs().join("kernel/security/lockdown"),
        "none [integrity] confidentiality\n",
    );
    let checks = f.run(None);
    let c = one(&checks, "lockdown", None);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("[integrity]"), "{}", c.detail);
    assert!(c.fix.as_deref().unwrap().contains("Secure Boot"));
    fs::remove_file(f.sysfs().join("kernel/security/lockdown")).unwrap();
    assert_eq!(status(&f.run(None), "lockdown", None), Status::Pass);
    write(&f.sysfs().join("kernel/security/lockdown"), "garbage\n");
    assert_eq!(status(&f.run(None), "lockdown", None), Status::Warn);
}

#[test]
fn strict_devmem_is_lifted_by_iomem_relaxed() {
    let f = Fake::seed();
    assert_eq!(status(&f.run(None), "strict-devmem", None), Status::Warn);
    f.put("proc/cmdline", "quiet iommu=pt iomem=relaxed\n");
    assert_eq!(status(&f.run(None), "strict-devmem", None), Status::Pass);
    f.put("proc/cmdline", "quiet iommu=pt\n");
    f.put(
        &format!("boot/config-{RELEASE}"),
        "CONFIG_STRICT_DEVMEM=y\n# CONFIG_IO_STRICT_DEVMEM is not set\n",
    );
    assert_eq!(status(&f.run(None), "strict-devmem", None), Status::Pass);
    fs::remove_file(f.path(&format!("boot/config-{RELEASE}"))).unwrap();
    assert_eq!(status(&f.run(None), "strict-devmem", None), Status::Warn);
}

#[test]
fn doctor_writes_nothing() {
    let f = Fake::seed();
    let snapshot = |dir: &Path| {
        let mut v = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let m = fs::symlink_metadata(e.path()).unwrap();
                v.push((e.path(), m.len(), m.modified().unwrap()));
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        v.sort();
        v
    };
    let before = (snapshot(f.root.path()), snapshot(f.twin.root()));
    let _ = f.run(Some(100));
    assert_eq!(before, (snapshot(f.root.path()), snapshot(f.twin.root())));
}

#[test]
fn the_report_has_one_line_per_check_and_a_fix_under_each_problem() {
    let f = Fake::seed();
    let checks = f.run(Some(100));
    let text = doctor::render(&checks);
    let lines: Vec<&str> = text.lines().collect();
    let fixes = checks.iter().filter(|c| c.fix.is_some()).count();
    assert_eq!(lines.len(), checks.len() + fixes + 1);
    assert!(lines.iter().any(|l| l.starts_with("WARN  strict-devmem ")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("  fix: add iomem=relaxed")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("PASS  vfio-bound@0000:c5:00.0 ")));
    assert_eq!(
        lines.last(),
        Some(&format!("{} pass, 2 warn, 0 fail", checks.len() - 2).as_str())
    );
    // JSON: name, subject, status, detail, fix.
    let v = serde_json::to_value(&checks).unwrap();
    let w = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "strict-devmem")
        .unwrap();
    assert_eq!(w["status"], "warn");
    assert!(w["fix"].as_str().unwrap().contains("iomem=relaxed"));
    let p = &v[0];
    assert_eq!(p["status"], "pass");
    assert!(p["fix"].is_null());
}

#[test]
fn every_check_is_listed_once() {
    let mut names: Vec<&str> = doctor::CHECKS.iter().map(|c| c.name).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    let f = Fake::seed();
    for c in f.run(Some(100)) {
        assert!(names.contains(&c.name), "{}", c.name);
    }
}

proptest! {
    #[test]
    fn cmdline_parse_never_panics(s in "\\PC{0,200}") {
        let c = Cmdline::parse(&s);
        let _ = c.last("iommu");
    }

    #[test]
    fn vfio_ids_never_panic(s in "[0-9a-fA-Fx:, zZ-]{0,80}") {
        let _ = parse_vfio_ids(&s);
    }

    #[test]
    fn modprobe_conf_never_panics(s in "\\PC{0,300}") {
        let mut m = ModprobeConf::default();
        m.add(&s, Path::new("/x.conf"));
        let _ = m.vfio_ids();
        let _ = m.held_back("amdgpu", None);
    }

    #[test]
    fn small_parsers_never_panic(s in "\\PC{0,200}", p in "[a-z*?:0-9]{0,20}") {
        let _ = parse_modules_alias(&s);
        let _ = parse_lockdown(&s);
        let _ = kconfig_value(&s, "CONFIG_IO_STRICT_DEVMEM");
        let _ = glob_match(&p, &s);
    }

    #[test]
    fn star_matches_anything_after_a_prefix(prefix in "[a-z0-9:]{0,10}", rest in "[a-zA-Z0-9:]{0,20}") {
        let pattern = format!("{prefix}*");
        let text = format!("{prefix}{rest}");
        prop_assert!(glob_match(&pattern, &text));
    }
}
