//! A config-space builder for the twin: headers, BARs and capability chains
//! laid out as real hardware has them, with the writable-bit masks the device
//! model enforces.

use crate::pci::regs::*;

/// One BAR of a type 0 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub addr: u64,
    pub size: u64,
    pub kind: BarKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64 { prefetch: bool },
}

impl Bar {
    /// The kernel's resource flags for this BAR (include/linux/ioport.h bits
    /// plus the PCI BAR flag bits in the low nibble, as `resource` shows them).
    pub fn resource_flags(&self) -> u64 {
        use crate::pci::resource::*;
        const IORESOURCE_SIZEALIGN: u64 = 0x0004_0000;
        match self.kind {
            BarKind::Io => IORESOURCE_IO | IORESOURCE_SIZEALIGN | 0x1,
            BarKind::Mem32 => IORESOURCE_MEM | IORESOURCE_SIZEALIGN,
            BarKind::Mem64 { prefetch } => {
                let mut f = IORESOURCE_MEM | IORESOURCE_SIZEALIGN | IORESOURCE_MEM_64 | 0x4;
                if prefetch {
                    f |= IORESOURCE_PREFETCH | 0x8;
                }
                f
            }
        }
    }

    fn reg_low(&self) -> u32 {
        match self.kind {
            BarKind::Io => (self.addr as u32 & !0x3) | PCI_BASE_ADDRESS_SPACE_IO,
            BarKind::Mem32 => self.addr as u32 & !0xf,
            BarKind::Mem64 { prefetch } => {
                (self.addr as u32 & !0xf)
                    | PCI_BASE_ADDRESS_MEM_TYPE_64
                    | if prefetch {
                        PCI_BASE_ADDRESS_MEM_PREFETCH
                    } else {
                        0
                    }
            }
        }
    }
}

/// PCIe capability contents.
#[derive(Debug, Clone, Copy)]
pub struct Exp {
    pub port_type: u8,
    pub flr: bool,
    /// LNKCAP.SLS (1 = 2.5 GT/s … 4 = 16 GT/s) and width.
    pub speed: u8,
    pub width: u8,
    /// Root/downstream ports: link active reporting (DLLLARC) and DLLLA set.
    pub dll_active_reporting: bool,
    pub rrs_sv: bool,
}

/// Builds one config space.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub data: Vec<u8>,
    pub writable: Vec<u8>,
    pub w1c: Vec<u8>,
    last_cap_next: usize,
    ext_prev: Option<usize>,
}

impl ConfigBuilder {
    pub fn new(
        vendor: u16,
        device: u16,
        class: u32,
        revision: u8,
        header_type: u8,
        extended: bool,
    ) -> Self {
        let n = if extended {
            PCI_CFG_SPACE_EXP_SIZE
        } else {
            PCI_CFG_SPACE_SIZE
        };
        let mut b = ConfigBuilder {
            data: vec![0; n],
            writable: vec![0; n],
            w1c: vec![0; n],
            last_cap_next: PCI_CAPABILITY_LIST as usize,
            ext_prev: None,
        };
        b.w16(PCI_VENDOR_ID, vendor);
        b.w16(PCI_DEVICE_ID, device);
        b.w32(PCI_CLASS_REVISION, (class << 8) | revision as u32);
        b.w8(PCI_HEADER_TYPE, header_type);
        // COMMAND: IO, MEMORY, MASTER, SERR, INTX_DISABLE are writable.
        b.mask16(PCI_COMMAND, 0x0547);
        // STATUS error bits are write-1-to-clear.
        b.w1c16(PCI_STATUS, 0xf900);
        b.mask8(PCI_CACHE_LINE_SIZE, 0xff);
        b.mask8(PCI_INTERRUPT_LINE, 0xff);
        b
    }

    pub fn w8(&mut self, off: u16, v: u8) {
        self.data[off as usize] = v;
    }

    pub fn w16(&mut self, off: u16, v: u16) {
        self.data[off as usize..off as usize + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub fn w32(&mut self, off: u16, v: u32) {
        self.data[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn mask8(&mut self, off: u16, m: u8) {
        self.writable[off as usize] = m;
    }

    pub fn mask16(&mut self, off: u16, m: u16) {
        self.writable[off as usize..off as usize + 2].copy_from_slice(&m.to_le_bytes());
    }

    pub fn mask32(&mut self, off: u16, m: u32) {
        self.writable[off as usize..off as usize + 4].copy_from_slice(&m.to_le_bytes());
    }

    pub fn w1c16(&mut self, off: u16, m: u16) {
        self.w1c[off as usize..off as usize + 2].copy_from_slice(&m.to_le_bytes());
    }

    pub fn command(mut self, v: u16) -> Self {
        self.w16(PCI_COMMAND, v);
        self
    }

    pub fn subsystem(mut self, vendor: u16, device: u16) -> Self {
        self.w16(PCI_SUBSYSTEM_VENDOR_ID, vendor);
        self.w16(PCI_SUBSYSTEM_ID, device);
        self
    }

    pub fn interrupt_pin(mut self, pin: u8) -> Self {
        self.w8(PCI_INTERRUPT_PIN, pin);
        self
    }

    pub fn bar(mut self, bar: Bar) -> Self {
        let off = PCI_BASE_ADDRESS_0 + 4 * bar.index as u16;
        self.w32(off, bar.reg_low());
        // Address bits above the size are writable (sizing works as on hardware).
        let size_mask = !(bar.size.max(16) - 1);
        self.mask32(off, (size_mask as u32) & !0xf);
        if let BarKind::Mem64 { .. } = bar.kind {
            self.w32(off + 4, (bar.addr >> 32) as u32);
            self.mask32(off + 4, (size_mask >> 32) as u32);
        }
        self
    }

    /// Type 1 header: bus numbers, windows, and BRIDGE_CONTROL.
    pub fn bridge(
        mut self,
        primary: u8,
        secondary: u8,
        subordinate: u8,
        bridge_control: u16,
    ) -> Self {
        self.w8(PCI_PRIMARY_BUS, primary);
        self.w8(PCI_SECONDARY_BUS, secondary);
        self.w8(PCI_SUBORDINATE_BUS, subordinate);
        for off in [PCI_PRIMARY_BUS, PCI_SECONDARY_BUS, PCI_SUBORDINATE_BUS] {
            self.mask8(off, 0xff);
        }
        self.w16(PCI_BRIDGE_CONTROL, bridge_control);
        // PARITY, SERR, ISA, VGA, MASTER_ABORT, BUS_RESET are writable.
        self.mask16(PCI_BRIDGE_CONTROL, 0x006f);
        self
    }

    fn add_cap(&mut self, off: u16, id: u8) {
        self.data[self.last_cap_next] = off as u8;
        if self.last_cap_next == PCI_CAPABILITY_LIST as usize {
            let st = u16::from_le_bytes([self.data[6], self.data[7]]) | Status::CAP_LIST.bits();
            self.w16(PCI_STATUS, st);
        }
        self.w8(off, id);
        self.w8(off + 1, 0);
        self.last_cap_next = off as usize + 1;
    }

    pub fn cap_vndr(mut self, off: u16, len: u8) -> Self {
        self.add_cap(off, PCI_CAP_ID_VNDR);
        self.w8(off + 2, len);
        self
    }

    /// PM capability v3. `pme_from` is PMC bits 15:11.
    pub fn cap_pm(mut self, off: u16, d1d2: bool, pme_from: u16, no_soft_reset: bool) -> Self {
        self.add_cap(off, PCI_CAP_ID_PM);
        let mut pmc = 0x0003 | (pme_from & 0xf800);
        if d1d2 {
            pmc |= (Pmc::D1 | Pmc::D2).bits();
        }
        self.w16(off + PCI_PM_PMC, pmc);
        let pmcsr = if no_soft_reset {
            Pmcsr::NO_SOFT_RESET.bits()
        } else {
            0
        };
        self.w16(off + PCI_PM_CTRL, pmcsr);
        self.mask16(off + PCI_PM_CTRL, 0x0103);
        self.w1c[(off + PCI_PM_CTRL + 1) as usize] = 0x80;
        self
    }

    pub fn cap_exp(mut self, off: u16, e: Exp) -> Self {
        self.add_cap(off, PCI_CAP_ID_EXP);
        let slot = matches!(
            e.port_type,
            PCI_EXP_TYPE_ROOT_PORT | PCI_EXP_TYPE_DOWNSTREAM
        );
        self.w16(
            off + PCI_EXP_FLAGS,
            0x0002 | ((e.port_type as u16) << 4) | if slot { 0x0100 } else { 0 },
        );
        let mut devcap = 0x0000_8002u32; // RBER, 512-byte max payload
        if e.flr {
            devcap |= DevCap::FLR.bits();
        }
        self.w32(off + PCI_EXP_DEVCAP, devcap);
        self.w16(off + PCI_EXP_DEVCTL, 0x2910);
        self.mask16(off + PCI_EXP_DEVCTL, 0xffff);
        self.w1c16(off + PCI_EXP_DEVSTA, 0x000f);
        let mut lnkcap = e.speed as u32 | ((e.width as u32) << 4) | 0x0c00;
        if e.dll_active_reporting {
            lnkcap |= LnkCap::DLLLARC.bits();
        }
        self.w32(off + PCI_EXP_LNKCAP, lnkcap);
        self.w16(off + PCI_EXP_LNKCTL, 0x0040);
        self.mask16(off + PCI_EXP_LNKCTL, 0x0ffb);
        let mut lnksta = e.speed as u16 | ((e.width as u16) << 4) | LnkSta::SLC.bits();
        if e.dll_active_reporting {
            lnksta |= LnkSta::DLLLA.bits();
        }
        self.w16(off + PCI_EXP_LNKSTA, lnksta);
        if e.port_type == PCI_EXP_TYPE_ROOT_PORT {
            self.w16(
                off + PCI_EXP_RTCAP,
                if e.rrs_sv { RtCap::RRS_SV.bits() } else { 0 },
            );
            self.mask16(off + PCI_EXP_RTCTL, 0x001f);
        }
        self
    }

    pub fn cap_msi(mut self, off: u16) -> Self {
        self.add_cap(off, PCI_CAP_ID_MSI);
        self.w16(off + PCI_MSI_FLAGS, PCI_MSI_FLAGS_64BIT);
        self.mask16(off + PCI_MSI_FLAGS, 0x0071);
        for o in [4u16, 8, 12] {
            self.mask32(off + o, 0xffff_ffff);
        }
        self
    }

    pub fn cap_msix(mut self, off: u16, entries: u16, bir: u8, table: u32, pba: u32) -> Self {
        self.add_cap(off, PCI_CAP_ID_MSIX);
        self.w16(off + PCI_MSIX_FLAGS, (entries - 1) & 0x7ff);
        self.mask16(off + PCI_MSIX_FLAGS, 0xc000);
        self.w32(off + 4, table | bir as u32);
        self.w32(off + 8, pba | bir as u32);
        self
    }

    pub fn cap_af(mut self, off: u16) -> Self {
        self.add_cap(off, PCI_CAP_ID_AF);
        self.w8(off + PCI_AF_LENGTH, 6);
        self.w8(off + PCI_AF_CAP, (AfCap::TP | AfCap::FLR).bits());
        self.mask8(off + PCI_AF_CTRL, 0x01);
        self
    }

    /// Appends an extended capability at `off` (≥ 0x100), linking the previous one.
    pub fn ext_cap(mut self, off: u16, id: u16, version: u8) -> Self {
        if self.data.len() <= PCI_CFG_SPACE_SIZE {
            return self;
        }
        if let Some(prev) = self.ext_prev {
            let h = u32::from_le_bytes([
                self.data[prev],
                self.data[prev + 1],
                self.data[prev + 2],
                self.data[prev + 3],
            ]);
            self.w32(prev as u16, (h & 0x000f_ffff) | ((off as u32) << 20));
        }
        self.w32(off, id as u32 | ((version as u32) << 16));
        self.ext_prev = Some(off as usize);
        self
    }

    pub fn build(self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        (self.data, self.writable, self.w1c)
    }
}
