//! One function's config space (bytes, writable and write-1-to-clear masks) and its sysfs
//! `resource` table.

use crate::pci::regs::*;
use crate::pci::resource::Resource;
use crate::sim::config::{Bar, BarKind, ConfigBuilder, Exp};

use super::{b, FnSpec, Kind};

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
