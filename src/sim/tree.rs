//! The twin's sysfs tree: the seed's host, a Minisforum UM880 Pro with a Ryzen 7
//! 8845HS, laid out from the field report's `lspci -tvnn`, IOMMU group listing,
//! `lspci -k` drivers and dmesg BAR lines. Where the report is silent (the
//! non-GPU devices' exact `reset_method`, their BAR addresses) the values are
//! plausible, marked here as such, and do not affect the 780M's verdicts.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::pci::regs::*;
use crate::pci::resource::{self, Resource};
use crate::pci::Bdf;
use crate::sim::config::{Bar, BarKind, ConfigBuilder, Exp};

/// How a function's config space is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No capabilities, 256-byte config (AMD's dummy host bridges, the FCH).
    Plain,
    /// A PCIe root port (type 1 header) over `secondary..=subordinate`.
    RootPort {
        secondary: u8,
        subordinate: u8,
        hotplug: bool,
    },
    /// A PCIe endpoint; `legacy` = Legacy Endpoint type; `no_soft_reset` = PMCSR bit.
    Endpoint {
        legacy: bool,
        flr: bool,
        no_soft_reset: bool,
    },
    /// The 780M iGPU: Legacy Endpoint, no FLR, PM D1 D2 D3hot D3cold, MSI, MSI-X.
    Igpu,
}

/// One function of the twin.
#[derive(Debug, Clone)]
pub struct FnSpec {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub revision: u8,
    pub subsystem: (u16, u16),
    pub driver: Option<&'static str>,
    pub iommu_group: Option<u32>,
    pub kind: Kind,
    pub bars: Vec<Bar>,
    /// `reset_method` content; empty = the kernel found none (no `reset` either).
    pub reset_method: &'static str,
    /// ACPI path of the companion node, if any.
    pub acpi: Option<&'static str>,
    /// `_PR3` power resources on that node.
    pub pr3: &'static [&'static str],
    /// The bridge above, `None` for the root bus.
    pub parent: Option<Bdf>,
    /// COMMAND as the host left it.
    pub command: u16,
}

const fn b(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(0, bus, dev, func)
}

fn mem64(index: u8, addr: u64, size: u64, prefetch: bool) -> Bar {
    Bar {
        index,
        addr,
        size,
        kind: BarKind::Mem64 { prefetch },
    }
}

fn mem32(index: u8, addr: u64, size: u64) -> Bar {
    Bar {
        index,
        addr,
        size,
        kind: BarKind::Mem32,
    }
}

fn io(index: u8, addr: u64, size: u64) -> Bar {
    Bar {
        index,
        addr,
        size,
        kind: BarKind::Io,
    }
}

#[allow(clippy::too_many_arguments)]
fn f(
    bdf: Bdf,
    ids: (u16, u16),
    class: u32,
    revision: u8,
    driver: Option<&'static str>,
    group: Option<u32>,
    kind: Kind,
    reset_method: &'static str,
) -> FnSpec {
    let command = match (driver, &kind) {
        (_, Kind::RootPort { .. }) => 0x0007,
        (None, _) => 0x0000,
        (Some("vfio-pci"), _) => 0x0000,
        (Some(_), _) => 0x0406,
    };
    FnSpec {
        bdf,
        vendor: ids.0,
        device: ids.1,
        class,
        revision,
        subsystem: (0x1f4c, 0xb016),
        driver,
        iommu_group: group,
        kind,
        bars: vec![],
        reset_method,
        acpi: None,
        pr3: &[],
        parent: None,
        command,
    }
}

impl FnSpec {
    fn bars(mut self, bars: Vec<Bar>) -> Self {
        self.bars = bars;
        self
    }

    fn under(mut self, parent: Bdf) -> Self {
        self.parent = Some(parent);
        self
    }

    fn acpi(mut self, path: &'static str) -> Self {
        self.acpi = Some(path);
        self
    }

    fn command(mut self, c: u16) -> Self {
        self.command = c;
        self
    }

    pub fn is_bridge(&self) -> bool {
        matches!(self.kind, Kind::RootPort { .. })
    }

    pub fn is_pcie(&self) -> bool {
        !matches!(self.kind, Kind::Plain)
    }
}

const AMD: u16 = PCI_VENDOR_ID_AMD;
const ATI: u16 = PCI_VENDOR_ID_ATI;
const RP: fn(u8, u8) -> Kind = |s, e| Kind::RootPort {
    secondary: s,
    subordinate: e,
    hotplug: false,
};
const EP: Kind = Kind::Endpoint {
    legacy: false,
    flr: false,
    no_soft_reset: false,
};
const EP_NSR: Kind = Kind::Endpoint {
    legacy: true,
    flr: false,
    no_soft_reset: true,
};
const EP_LEG: Kind = Kind::Endpoint {
    legacy: true,
    flr: false,
    no_soft_reset: false,
};

/// The UM880 Pro (Ryzen 7 8845HS) of the seed, function by function.
pub fn um880pro() -> Vec<FnSpec> {
    let gp17 = b(0, 8, 1);
    let gp18 = b(0, 8, 2);
    let gp19 = b(0, 8, 3);
    vec![
        // Root complex and IOMMU: in no IOMMU group (seed's group listing).
        f(
            b(0, 0, 0),
            (AMD, 0x14e8),
            0x060000,
            0,
            None,
            None,
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0, 2),
            (AMD, 0x14e9),
            0x080600,
            0,
            None,
            None,
            Kind::Plain,
            "",
        ),
        f(
            b(0, 1, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(0),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 1, 2),
            (AMD, 0x14ed),
            0x060400,
            0,
            Some("pcieport"),
            Some(1),
            RP(0x01, 0x01),
            "pm",
        ),
        f(
            b(0, 2, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(2),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 2, 1),
            (AMD, 0x14ee),
            0x060400,
            0,
            Some("pcieport"),
            Some(3),
            RP(0x02, 0x02),
            "pm",
        ),
        f(
            b(0, 2, 2),
            (AMD, 0x14ee),
            0x060400,
            0,
            Some("pcieport"),
            Some(4),
            RP(0x03, 0x03),
            "pm",
        ),
        f(
            b(0, 2, 3),
            (AMD, 0x14ee),
            0x060400,
            0,
            Some("pcieport"),
            Some(5),
            RP(0x04, 0x04),
            "pm",
        ),
        f(
            b(0, 3, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(6),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 3, 1),
            (AMD, 0x14ef),
            0x060400,
            0,
            Some("pcieport"),
            Some(6),
            Kind::RootPort {
                secondary: 0x05,
                subordinate: 0x64,
                hotplug: true,
            },
            "pm",
        ),
        f(
            b(0, 4, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(7),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 4, 1),
            (AMD, 0x14ef),
            0x060400,
            0,
            Some("pcieport"),
            Some(7),
            Kind::RootPort {
                secondary: 0x65,
                subordinate: 0xc4,
                hotplug: true,
            },
            "pm",
        ),
        f(
            b(0, 8, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(8),
            Kind::Plain,
            "",
        ),
        f(
            gp17,
            (AMD, 0x14eb),
            0x060400,
            0,
            Some("pcieport"),
            Some(9),
            RP(0xc5, 0xc5),
            "pm",
        )
        .acpi("\\_SB_.PCI0.GP17"),
        f(
            gp18,
            (AMD, 0x14eb),
            0x060400,
            0,
            Some("pcieport"),
            Some(10),
            RP(0xc6, 0xc6),
            "pm",
        )
        .acpi("\\_SB_.PCI0.GP18"),
        f(
            gp19,
            (AMD, 0x14eb),
            0x060400,
            0,
            Some("pcieport"),
            Some(11),
            RP(0xc7, 0xc7),
            "pm",
        )
        .acpi("\\_SB_.PCI0.GP19"),
        f(
            b(0, 0x14, 0),
            (AMD, 0x790b),
            0x0c0500,
            0x71,
            Some("piix4_smbus"),
            Some(12),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x14, 3),
            (AMD, 0x790e),
            0x060100,
            0x51,
            None,
            Some(12),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 0),
            (AMD, 0x14f0),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 1),
            (AMD, 0x14f1),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 2),
            (AMD, 0x14f2),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 3),
            (AMD, 0x14f3),
            0x060000,
            0,
            Some("k10temp"),
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 4),
            (AMD, 0x14f4),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 5),
            (AMD, 0x14f5),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 6),
            (AMD, 0x14f6),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 7),
            (AMD, 0x14f7),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        // Endpoints behind the GPP bridges (reset_method values: plausible).
        f(
            b(1, 0, 0),
            (0xc0a9, 0x5426),
            0x010802,
            0x01,
            Some("nvme"),
            Some(14),
            Kind::Endpoint {
                legacy: false,
                flr: true,
                no_soft_reset: true,
            },
            "flr bus",
        )
        .under(b(0, 1, 2))
        .bars(vec![mem64(0, 0xdcf0_0000, 0x4000, false)]),
        f(
            b(2, 0, 0),
            (0x10ec, 0x8125),
            0x020000,
            0x05,
            Some("r8169"),
            Some(15),
            EP,
            "pm bus",
        )
        .under(b(0, 2, 1))
        .bars(vec![
            io(0, 0xf000, 0x100),
            mem64(2, 0xdce0_0000, 0x10000, false),
            mem64(4, 0xdce1_0000, 0x4000, false),
        ]),
        f(
            b(3, 0, 0),
            (0x10ec, 0x8125),
            0x020000,
            0x05,
            Some("r8169"),
            Some(16),
            EP,
            "pm bus",
        )
        .under(b(0, 2, 2))
        .bars(vec![
            io(0, 0xe000, 0x100),
            mem64(2, 0xdcd0_0000, 0x10000, false),
            mem64(4, 0xdcd1_0000, 0x4000, false),
        ]),
        f(
            b(4, 0, 0),
            (0x14c3, 0x0616),
            0x028000,
            0,
            Some("mt7921e"),
            Some(17),
            EP,
            "pm bus",
        )
        .under(b(0, 2, 3))
        .bars(vec![
            mem64(0, 0x007c_1000_0000, 0x10_0000, true),
            mem64(2, 0xdcc0_0000, 0x8000, false),
        ]),
        // Bus c5: the iGPU's multi-function device (drivers from the seed's lspci -k).
        f(
            b(0xc5, 0, 0),
            (ATI, 0x1900),
            0x030000,
            0xc5,
            Some("vfio-pci"),
            Some(18),
            Kind::Igpu,
            "",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.VGA_")
        .command(0x0002)
        .bars(vec![
            mem64(0, 0x7c_0000_0000, 256 << 20, true),
            mem64(2, 0xdc00_0000, 2 << 20, true),
            io(4, 0xd000, 0x100),
            mem32(5, 0xdc50_0000, 512 << 10),
        ]),
        f(
            b(0xc5, 0, 1),
            (ATI, 0x1640),
            0x040300,
            0,
            Some("vfio-pci"),
            Some(19),
            EP_LEG,
            "pm",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.HDAU")
        .bars(vec![mem32(0, 0xdc5c_8000, 0x4000)]),
        f(
            b(0xc5, 0, 2),
            (AMD, 0x15c7),
            0x108000,
            0,
            Some("ccp"),
            Some(20),
            EP_NSR,
            "",
        )
        .under(gp17)
        .bars(vec![
            mem32(2, 0xdc40_0000, 1 << 20),
            mem32(5, 0xdc5c_c000, 0x2000),
        ]),
        f(
            b(0xc5, 0, 3),
            (AMD, 0x15b9),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(21),
            EP_LEG,
            "pm",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.XHC0")
        .bars(vec![mem64(0, 0xdc20_0000, 1 << 20, false)]),
        f(
            b(0xc5, 0, 4),
            (AMD, 0x15ba),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(22),
            EP_LEG,
            "pm",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.XHC1")
        .bars(vec![mem64(0, 0xdc30_0000, 1 << 20, false)]),
        f(
            b(0xc5, 0, 5),
            (AMD, 0x15e2),
            0x048000,
            0x63,
            Some("vfio-pci"),
            Some(23),
            EP_NSR,
            "",
        )
        .under(gp17)
        .bars(vec![mem32(0, 0xdc58_0000, 512 << 10)]),
        f(
            b(0xc5, 0, 6),
            (AMD, 0x15e3),
            0x040300,
            0,
            Some("vfio-pci"),
            Some(24),
            EP_NSR,
            "",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.AZAL")
        .bars(vec![mem32(0, 0xdc5c_0000, 0x8000)]),
        // Buses c6 and c7.
        f(
            b(0xc6, 0, 0),
            (AMD, 0x14ec),
            0x130000,
            0,
            None,
            Some(25),
            EP_LEG,
            "bus",
        )
        .under(gp18),
        f(
            b(0xc6, 0, 1),
            (AMD, 0x1502),
            0x118000,
            0,
            None,
            Some(26),
            EP_LEG,
            "pm",
        )
        .under(gp18)
        .bars(vec![
            mem32(0, 0xdca0_0000, 1 << 20),
            mem32(1, 0xdcb0_0000, 0x2000),
        ]),
        f(
            b(0xc7, 0, 0),
            (AMD, 0x14ec),
            0x130000,
            0,
            None,
            Some(27),
            EP_LEG,
            "bus",
        )
        .under(gp19),
        f(
            b(0xc7, 0, 3),
            (AMD, 0x15c0),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(28),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc60_0000, 1 << 20, false)]),
        f(
            b(0xc7, 0, 4),
            (AMD, 0x15c1),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(29),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc70_0000, 1 << 20, false)]),
        f(
            b(0xc7, 0, 5),
            (AMD, 0x1668),
            0x0c0340,
            0,
            Some("thunderbolt"),
            Some(30),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc80_0000, 512 << 10, false)]),
        f(
            b(0xc7, 0, 6),
            (AMD, 0x1669),
            0x0c0340,
            0,
            Some("thunderbolt"),
            Some(31),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc90_0000, 512 << 10, false)]),
    ]
}

/// The config space of one function (bytes, writable mask, w1c mask).
pub fn config_space(spec: &FnSpec, multifunction: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut header = if spec.is_bridge() {
        PCI_HEADER_TYPE_BRIDGE
    } else {
        PCI_HEADER_TYPE_NORMAL
    };
    if multifunction {
        header |= PCI_HEADER_TYPE_MFD;
    }
    let mut c = ConfigBuilder::new(
        spec.vendor,
        spec.device,
        spec.class,
        spec.revision,
        header,
        spec.is_pcie(),
    )
    .command(spec.command);
    if !spec.is_bridge() {
        c = c.subsystem(spec.subsystem.0, spec.subsystem.1);
    }
    for bar in &spec.bars {
        c = c.bar(*bar);
    }
    const PME_ALL: u16 = 0xf800;
    const PME_D1_D3COLD: u16 = 0xf000;
    match spec.kind {
        Kind::Plain => {}
        Kind::RootPort {
            secondary,
            subordinate,
            hotplug,
        } => {
            let bc = if spec.bdf == b(0, 8, 1) {
                0x000a
            } else {
                0x0002
            };
            c = c
                .bridge(spec.bdf.bus, secondary, subordinate, bc)
                .cap_pm(0x50, false, PME_ALL, false)
                .cap_exp(
                    0x58,
                    Exp {
                        port_type: PCI_EXP_TYPE_ROOT_PORT,
                        flr: false,
                        speed: if hotplug { 3 } else { 4 },
                        width: if hotplug { 4 } else { 16 },
                        dll_active_reporting: true,
                        rrs_sv: false,
                    },
                )
                .cap_msi(0xa0)
                .ext_cap(0x100, PCI_EXT_CAP_ID_ERR, 2)
                .ext_cap(0x150, PCI_EXT_CAP_ID_ACS, 1);
        }
        Kind::Endpoint {
            legacy,
            flr,
            no_soft_reset,
        } => {
            c = c
                .interrupt_pin(1)
                .cap_pm(0x50, true, PME_D1_D3COLD, no_soft_reset)
                .cap_exp(
                    0x64,
                    Exp {
                        port_type: if legacy {
                            PCI_EXP_TYPE_LEG_END
                        } else {
                            PCI_EXP_TYPE_ENDPOINT
                        },
                        flr,
                        speed: 4,
                        width: 16,
                        dll_active_reporting: false,
                        rrs_sv: false,
                    },
                )
                .cap_msi(0xa0)
                .ext_cap(0x100, PCI_EXT_CAP_ID_VNDR, 1);
        }
        Kind::Igpu => {
            // lspci of 780M-class iGPUs: [48] vendor, [50] PM v3, [64] Express
            // Legacy Endpoint, [a0] MSI, [c0] MSI-X; extended caps from 0x100.
            c = c
                .interrupt_pin(1)
                .cap_vndr(0x48, 8)
                .cap_pm(0x50, true, PME_D1_D3COLD, false)
                .cap_exp(
                    0x64,
                    Exp {
                        port_type: PCI_EXP_TYPE_LEG_END,
                        flr: false,
                        speed: 4,
                        width: 16,
                        dll_active_reporting: false,
                        rrs_sv: false,
                    },
                )
                .cap_msi(0xa0)
                .cap_msix(0xc0, 4, 5, 0x42000, 0x43000)
                .ext_cap(0x100, PCI_EXT_CAP_ID_VNDR, 1)
                .ext_cap(0x270, PCI_EXT_CAP_ID_SECPCI, 1)
                .ext_cap(0x2a0, PCI_EXT_CAP_ID_ACS, 1)
                .ext_cap(0x2b0, PCI_EXT_CAP_ID_ATS, 1)
                .ext_cap(0x2c0, PCI_EXT_CAP_ID_PRI, 1)
                .ext_cap(0x2d0, PCI_EXT_CAP_ID_PASID, 1)
                .ext_cap(0x410, PCI_EXT_CAP_ID_PL_16GT, 1);
        }
    }
    c.build()
}

/// The sysfs `resource` table of a function.
pub fn resources(spec: &FnSpec, all: &[FnSpec]) -> Vec<Resource> {
    // 13 entries for endpoints (BARs, ROM, SR-IOV), 17 for bridges (+ windows).
    let n = if spec.is_bridge() { 17 } else { 13 };
    let mut out: Vec<Resource> = (0..n)
        .map(|index| Resource {
            index,
            start: 0,
            end: 0,
            flags: 0,
        })
        .collect();
    for bar in &spec.bars {
        let r = &mut out[bar.index as usize];
        r.start = bar.addr;
        r.end = bar.addr + bar.size - 1;
        r.flags = bar.resource_flags();
    }
    if let Kind::RootPort { .. } = spec.kind {
        // The memory window (index 14) spans the 32-bit BARs below the bridge.
        let below: Vec<&Bar> = all
            .iter()
            .filter(|s| s.parent == Some(spec.bdf))
            .flat_map(|s| s.bars.iter())
            .filter(|b| b.kind == BarKind::Mem32 || (b.addr >> 32) == 0 && b.kind != BarKind::Io)
            .collect();
        if let (Some(lo), Some(hi)) = (
            below.iter().map(|b| b.addr).min(),
            below.iter().map(|b| b.addr + b.size).max(),
        ) {
            out[14].start = lo & !0xf_ffff;
            out[14].end = ((hi + 0xf_ffff) & !0xf_ffff) - 1;
            out[14].flags = 0x200;
        }
    }
    out
}

/// Relative symlink target from directory `from` to `to` (both absolute).
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c.as_os_str());
    }
    p
}

fn io_err<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(io_err("create directory", p))
}

fn write(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    fs::write(p, data).map_err(io_err("write", p))
}

/// A write-only sysfs attribute (`remove`, `rescan`, `reset`, `bind`, …).
fn write_only(p: &Path) -> Result<()> {
    write(p, b"")?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o200)).map_err(io_err("chmod", p))
}

fn link(at: &Path, to: &Path) -> Result<()> {
    let dir = at.parent().unwrap_or(Path::new("/"));
    let _ = fs::remove_file(at);
    symlink(relative(dir, to), at).map_err(io_err("symlink", at))
}

/// Paths of the tree, relative to its sysfs root.
pub fn device_dir(sysfs: &Path, spec: &FnSpec, all: &[FnSpec]) -> PathBuf {
    let mut chain = vec![spec.bdf];
    let mut cur = spec.parent;
    while let Some(p) = cur {
        chain.push(p);
        cur = all.iter().find(|s| s.bdf == p).and_then(|s| s.parent);
    }
    let root = chain.last().copied().unwrap_or(spec.bdf);
    let mut dir = sysfs
        .join("devices")
        .join(format!("pci{:04x}:{:02x}", root.domain, 0));
    for b in chain.iter().rev() {
        dir.push(b.to_string());
    }
    dir
}

/// Lays out one function: its directory, attributes and every link to it.
pub fn lay_device(sysfs: &Path, spec: &FnSpec, all: &[FnSpec]) -> Result<PathBuf> {
    let dir = lay_device_files(sysfs, spec, all)?;
    publish_device(sysfs, spec, &dir)?;
    Ok(dir)
}

/// The `bus/pci/devices/<bdf>` link: where a device becomes visible. Laid
/// last, as the kernel adds a device to sysfs once it is set up.
pub fn publish_device(sysfs: &Path, spec: &FnSpec, dir: &Path) -> Result<()> {
    let devlink = sysfs.join("bus/pci/devices").join(spec.bdf.to_string());
    link(&devlink, dir)
}

/// Everything of [`lay_device`] but the `bus/pci/devices` link.
pub fn lay_device_files(sysfs: &Path, spec: &FnSpec, all: &[FnSpec]) -> Result<PathBuf> {
    let dir = device_dir(sysfs, spec, all);
    mkdir(&dir)?;
    let multifunction = all
        .iter()
        .any(|s| s.bdf != spec.bdf && s.bdf.slot() == spec.bdf.slot());
    let (cfg, _, _) = config_space(spec, multifunction);
    write(&dir.join("config"), &cfg)?;
    for (name, val) in [
        ("vendor", format!("0x{:04x}", spec.vendor)),
        ("device", format!("0x{:04x}", spec.device)),
        ("class", format!("0x{:06x}", spec.class)),
        ("revision", format!("0x{:02x}", spec.revision)),
        (
            "subsystem_vendor",
            format!(
                "0x{:04x}",
                if spec.is_bridge() {
                    0
                } else {
                    spec.subsystem.0
                }
            ),
        ),
        (
            "subsystem_device",
            format!(
                "0x{:04x}",
                if spec.is_bridge() {
                    0
                } else {
                    spec.subsystem.1
                }
            ),
        ),
        ("enable", (spec.driver.is_some() as u8).to_string()),
        ("power_state", "D0".to_string()),
        ("d3cold_allowed", "1".to_string()),
        ("driver_override", "(null)".to_string()),
        ("numa_node", "-1".to_string()),
        ("irq", "0".to_string()),
    ] {
        write(&dir.join(name), format!("{val}\n"))?;
    }
    let mut uevent = String::new();
    if let Some(d) = spec.driver {
        uevent.push_str(&format!("DRIVER={d}\n"));
    }
    uevent.push_str(&format!(
        "PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={}\n",
        spec.class, spec.vendor, spec.device, spec.subsystem.0, spec.subsystem.1, spec.bdf
    ));
    write(&dir.join("uevent"), uevent)?;
    write(
        &dir.join("resource"),
        resource::format(&resources(spec, all)),
    )?;
    for bar in &spec.bars {
        let p = dir.join(format!("resource{}", bar.index));
        let file = fs::File::create(&p).map_err(io_err("create", &p))?;
        // Sparse: a 256 MiB BAR costs no disk.
        file.set_len(bar.size).map_err(io_err("truncate", &p))?;
    }
    if !spec.reset_method.is_empty() {
        write(
            &dir.join("reset_method"),
            format!("{}\n", spec.reset_method),
        )?;
        write_only(&dir.join("reset"))?;
    }
    write_only(&dir.join("remove"))?;
    write_only(&dir.join("rescan"))?;
    let power = dir.join("power");
    mkdir(&power)?;
    write(&power.join("control"), "on\n")?;
    write(&power.join("runtime_status"), "active\n")?;
    write(&power.join("runtime_enabled"), "forbidden\n")?;
    if let Kind::RootPort { secondary, .. } = spec.kind {
        let bus = dir
            .join("pci_bus")
            .join(format!("{:04x}:{secondary:02x}", spec.bdf.domain));
        mkdir(&bus)?;
        write_only(&bus.join("rescan"))?;
        write(&bus.join("cpuaffinity"), "ffff\n")?;
    }
    link(&dir.join("subsystem"), &sysfs.join("bus/pci"))?;
    if let Some(drv) = spec.driver {
        let ddir = sysfs.join("bus/pci/drivers").join(drv);
        lay_driver(&ddir)?;
        link(&dir.join("driver"), &ddir)?;
        link(&ddir.join(spec.bdf.to_string()), &dir)?;
    }
    if let Some(g) = spec.iommu_group {
        let gdir = sysfs.join("kernel/iommu_groups").join(g.to_string());
        mkdir(&gdir.join("devices"))?;
        write(&gdir.join("type"), "identity\n")?;
        link(&dir.join("iommu_group"), &gdir)?;
        link(&gdir.join("devices").join(spec.bdf.to_string()), &dir)?;
    }
    if let Some(acpi) = spec.acpi {
        let name = acpi.rsplit('.').next().unwrap_or("DEV");
        let node = sysfs
            .join("devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00")
            .join(format!(
                "device:{}",
                name.trim_matches('_').to_ascii_lowercase()
            ));
        mkdir(&node)?;
        write(&node.join("path"), format!("{acpi}\n"))?;
        write(&node.join("status"), "15\n")?;
        if !spec.pr3.is_empty() {
            let pr3 = node.join("power_resources_D3hot");
            mkdir(&pr3)?;
            for r in spec.pr3 {
                let res = sysfs.join("devices/LNXSYSTM:00/LNXSYBUS:00").join(r);
                mkdir(&res)?;
                link(&pr3.join(r), &res)?;
            }
        }
        link(&dir.join("firmware_node"), &node)?;
    }
    Ok(dir)
}

fn lay_driver(ddir: &Path) -> Result<()> {
    if ddir.exists() {
        return Ok(());
    }
    mkdir(ddir)?;
    for a in ["bind", "unbind", "new_id", "remove_id"] {
        write_only(&ddir.join(a))?;
    }
    Ok(())
}

/// Lays out the whole tree under `root` (`root/sys`, `root/dev`, `root/run`)
/// and returns the sysfs root.
pub fn build(root: &Path, specs: &[FnSpec]) -> Result<PathBuf> {
    let sysfs = root.join("sys");
    mkdir(&sysfs.join("bus/pci/devices"))?;
    mkdir(&sysfs.join("kernel/iommu_groups"))?;
    write_only(&sysfs.join("bus/pci/rescan"))?;
    write(&sysfs.join("bus/pci/drivers_autoprobe"), "1\n")?;
    for drv in ["vfio-pci", "pci-stub", "pcieport"] {
        lay_driver(&sysfs.join("bus/pci/drivers").join(drv))?;
    }
    let rootbus = sysfs.join("devices/pci0000:00");
    mkdir(&rootbus.join("pci_bus/0000:00"))?;
    write_only(&rootbus.join("pci_bus/0000:00/rescan"))?;
    // Parents first, so bridges exist before what sits below them.
    let mut order: Vec<&FnSpec> = specs.iter().collect();
    order.sort_by_key(|s| (s.parent.is_some(), s.bdf));
    for s in order {
        lay_device(&sysfs, s, specs)?;
    }
    // The ACPI VFCT table the firmware leaves for amdgpu, with the iGPU's VBIOS.
    let tables = sysfs.join("firmware/acpi/tables");
    mkdir(&tables)?;
    let vfct = crate::sim::rom::build_vfct(&[crate::sim::rom::SyntheticImage::seed_igpu()]);
    write(&tables.join("VFCT"), vfct)?;
    let vfio = root.join("dev/vfio");
    mkdir(&vfio)?;
    write(&vfio.join("vfio"), "")?;
    for s in specs.iter().filter(|s| s.driver == Some("vfio-pci")) {
        if let Some(g) = s.iommu_group {
            write(&vfio.join(g.to_string()), "")?;
        }
    }
    mkdir(&root.join("run"))?;
    write(&root.join("dev/kmsg"), "")?;
    host_files(root, &sysfs)?;
    Ok(sysfs)
}

/// The seed host's configuration beside the tree (`<root>/proc`, `/etc`,
/// `/usr/share/kvm`, …): what `doctor` and `hook` read there. The command
/// line, modprobe configuration, VM 100 and storage.cfg are the field
/// report's; the kernel release is a plausible Proxmox 8.4 one.
fn host_files(root: &Path, sysfs: &Path) -> Result<()> {
    let files: &[(&str, &str)] = &[
        ("proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.8.12-11-pve root=/dev/mapper/pve-root ro quiet iommu=pt\n"),
        ("proc/sys/kernel/osrelease", "6.8.12-11-pve\n"),
        // A fixed boot id: the twin's boot (resetlab caches a device's bases per boot).
        ("proc/sys/kernel/random/boot_id", "7e1a5e00-0000-4000-8000-000000000001\n"),
        // DMI as the kernel shows it; the twin's values, not a real BIOS's.
        ("sys/class/dmi/id/bios_vendor", "resetlab twin\n"),
        ("sys/class/dmi/id/bios_version", "twin-1.0 (not a real BIOS)\n"),
        ("sys/class/dmi/id/bios_date", "01/01/2026\n"),
        ("sys/class/dmi/id/sys_vendor", "resetlab twin\n"),
        ("sys/class/dmi/id/product_name", "UM880 Pro (twin of the field report's host)\n"),
        ("sys/class/dmi/id/board_name", "twin\n"),
        ("etc/modules", super::seed::ETC_MODULES),
        ("etc/modprobe.d/passthrough.conf", super::seed::PASSTHROUGH_CONF),
        ("etc/pve/storage.cfg", super::seed::STORAGE_CFG),
        ("etc/pve/qemu-server/100.conf", super::seed::VM_100_CONF),
        (
            "var/lib/vz/snippets/vm100-hooks.sh",
            "#!/usr/bin/bash\n# the field report's hookscript: remove in pre-stop, rescan in pre-start/post-stop\n\
             vmId=\"$1\"; runPhase=\"$2\"\ncase \"$runPhase\" in\n  pre-start|post-stop) echo 1 > /sys/bus/pci/rescan; sleep 2 ;;\n\
             esac\n",
        ),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            mkdir(d)?;
        }
        write(&p, text)?;
    }
    let hook = root.join("var/lib/vz/snippets/vm100-hooks.sh");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &hook))?;
    let kvm = root.join("usr/share/kvm");
    mkdir(&kvm)?;
    write(
        &kvm.join("vbios_1002_1900.bin"),
        crate::sim::rom::build_rom(0x1002, 0x1900, false),
    )?;
    write(
        &kvm.join("AMDGopDriver_8845hs.rom"),
        crate::sim::rom::build_rom(0x1002, 0x1900, true),
    )?;
    for m in ["vfio", "vfio_iommu_type1", "vfio_pci"] {
        mkdir(&sysfs.join("module").join(m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative(
                Path::new("/r/sys/bus/pci/devices"),
                Path::new("/r/sys/devices/pci0000:00/x")
            ),
            PathBuf::from("../../../devices/pci0000:00/x")
        );
    }

    #[test]
    fn the_seed_host_has_every_function() {
        let specs = um880pro();
        assert_eq!(specs.len(), 44);
        let igpu = specs.iter().find(|s| s.device == 0x1900).unwrap();
        assert_eq!(igpu.reset_method, "");
        assert_eq!(igpu.iommu_group, Some(18));
        let mut groups: Vec<u32> = specs.iter().filter_map(|s| s.iommu_group).collect();
        groups.sort();
        groups.dedup();
        assert_eq!(groups, (0..=31).collect::<Vec<_>>());
    }
}
