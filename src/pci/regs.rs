//! Config-space register offsets and bits, named as in Linux
//! `include/uapi/linux/pci_regs.h` (without the `PCI_` prefix where a module
//! path says it), so a reader can grep both.

use bitflags::bitflags;

pub const PCI_CFG_SPACE_SIZE: usize = 256;
pub const PCI_CFG_SPACE_EXP_SIZE: usize = 4096;

// Type 0/1 common header.
pub const PCI_VENDOR_ID: u16 = 0x00;
pub const PCI_DEVICE_ID: u16 = 0x02;
pub const PCI_COMMAND: u16 = 0x04;
pub const PCI_STATUS: u16 = 0x06;
pub const PCI_CLASS_REVISION: u16 = 0x08;
pub const PCI_REVISION_ID: u16 = 0x08;
pub const PCI_CLASS_PROG: u16 = 0x09;
pub const PCI_CLASS_DEVICE: u16 = 0x0a;
pub const PCI_CACHE_LINE_SIZE: u16 = 0x0c;
pub const PCI_LATENCY_TIMER: u16 = 0x0d;
pub const PCI_HEADER_TYPE: u16 = 0x0e;
pub const PCI_HEADER_TYPE_MASK: u8 = 0x7f;
pub const PCI_HEADER_TYPE_NORMAL: u8 = 0;
pub const PCI_HEADER_TYPE_BRIDGE: u8 = 1;
pub const PCI_HEADER_TYPE_CARDBUS: u8 = 2;
pub const PCI_HEADER_TYPE_MFD: u8 = 0x80;
pub const PCI_BIST: u16 = 0x0f;
pub const PCI_BASE_ADDRESS_0: u16 = 0x10;
pub const PCI_BASE_ADDRESS_SPACE_IO: u32 = 0x01;
pub const PCI_BASE_ADDRESS_MEM_TYPE_64: u32 = 0x04;
pub const PCI_BASE_ADDRESS_MEM_PREFETCH: u32 = 0x08;
pub const PCI_SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
pub const PCI_SUBSYSTEM_ID: u16 = 0x2e;
pub const PCI_ROM_ADDRESS: u16 = 0x30;
pub const PCI_CAPABILITY_LIST: u16 = 0x34;
pub const PCI_INTERRUPT_LINE: u16 = 0x3c;
pub const PCI_INTERRUPT_PIN: u16 = 0x3d;

// Type 1 (bridge) header.
pub const PCI_PRIMARY_BUS: u16 = 0x18;
pub const PCI_SECONDARY_BUS: u16 = 0x19;
pub const PCI_SUBORDINATE_BUS: u16 = 0x1a;
pub const PCI_ROM_ADDRESS1: u16 = 0x38;
pub const PCI_BRIDGE_CONTROL: u16 = 0x3e;

// Class codes (base class << 8 | subclass).
pub const PCI_CLASS_DISPLAY_VGA: u16 = 0x0300;
pub const PCI_CLASS_MULTIMEDIA_HD_AUDIO: u16 = 0x0403;
pub const PCI_CLASS_BRIDGE_PCI: u16 = 0x0604;
pub const PCI_VENDOR_ID_ATI: u16 = 0x1002;
pub const PCI_VENDOR_ID_AMD: u16 = 0x1022;

// Capability list.
pub const PCI_CAP_LIST_ID: u16 = 0;
pub const PCI_CAP_LIST_NEXT: u16 = 1;
pub const PCI_CAP_ID_PM: u8 = 0x01;
pub const PCI_CAP_ID_AGP: u8 = 0x02;
pub const PCI_CAP_ID_VPD: u8 = 0x03;
pub const PCI_CAP_ID_MSI: u8 = 0x05;
pub const PCI_CAP_ID_PCIX: u8 = 0x07;
pub const PCI_CAP_ID_HT: u8 = 0x08;
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
pub const PCI_CAP_ID_SSVID: u8 = 0x0d;
pub const PCI_CAP_ID_EXP: u8 = 0x10;
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
pub const PCI_CAP_ID_SATA: u8 = 0x12;
pub const PCI_CAP_ID_AF: u8 = 0x13;
pub const PCI_CAP_ID_EA: u8 = 0x14;

// Power management (offsets from the PM capability).
pub const PCI_PM_PMC: u16 = 2;
pub const PCI_PM_CTRL: u16 = 4;

// PCI Express (offsets from the PCIe capability).
pub const PCI_EXP_FLAGS: u16 = 0x02;
pub const PCI_EXP_FLAGS_VERS: u16 = 0x000f;
pub const PCI_EXP_FLAGS_TYPE: u16 = 0x00f0;
pub const PCI_EXP_TYPE_ENDPOINT: u8 = 0x0;
pub const PCI_EXP_TYPE_LEG_END: u8 = 0x1;
pub const PCI_EXP_TYPE_ROOT_PORT: u8 = 0x4;
pub const PCI_EXP_TYPE_UPSTREAM: u8 = 0x5;
pub const PCI_EXP_TYPE_DOWNSTREAM: u8 = 0x6;
pub const PCI_EXP_TYPE_PCI_BRIDGE: u8 = 0x7;
pub const PCI_EXP_TYPE_PCIE_BRIDGE: u8 = 0x8;
pub const PCI_EXP_TYPE_RC_END: u8 = 0x9;
pub const PCI_EXP_TYPE_RC_EC: u8 = 0xa;
pub const PCI_EXP_DEVCAP: u16 = 0x04;
pub const PCI_EXP_DEVCTL: u16 = 0x08;
pub const PCI_EXP_DEVSTA: u16 = 0x0a;
pub const PCI_EXP_LNKCAP: u16 = 0x0c;
pub const PCI_EXP_LNKCTL: u16 = 0x10;
pub const PCI_EXP_LNKSTA: u16 = 0x12;
pub const PCI_EXP_SLTCAP: u16 = 0x14;
pub const PCI_EXP_SLTCTL: u16 = 0x18;
pub const PCI_EXP_RTCTL: u16 = 0x1c;
pub const PCI_EXP_RTCAP: u16 = 0x1e;
pub const PCI_EXP_DEVCTL2: u16 = 0x28;
pub const PCI_EXP_LNKCTL2: u16 = 0x30;

// Advanced Features (offsets from the AF capability).
pub const PCI_AF_LENGTH: u16 = 2;
pub const PCI_AF_CAP: u16 = 3;
pub const PCI_AF_CTRL: u16 = 4;
pub const PCI_AF_STATUS: u16 = 5;

// MSI / MSI-X (offsets from their capabilities).
pub const PCI_MSI_FLAGS: u16 = 2;
pub const PCI_MSI_FLAGS_64BIT: u16 = 0x0080;
pub const PCI_MSI_FLAGS_MASKBIT: u16 = 0x0100;
pub const PCI_MSIX_FLAGS: u16 = 2;

// Extended capabilities (config offset 0x100 and up).
pub const PCI_EXT_CAP_START: u16 = 0x100;
pub const PCI_EXT_CAP_ID_ERR: u16 = 0x01;
pub const PCI_EXT_CAP_ID_VC: u16 = 0x02;
pub const PCI_EXT_CAP_ID_DSN: u16 = 0x03;
pub const PCI_EXT_CAP_ID_PWR: u16 = 0x04;
pub const PCI_EXT_CAP_ID_VNDR: u16 = 0x0b;
pub const PCI_EXT_CAP_ID_ACS: u16 = 0x0d;
pub const PCI_EXT_CAP_ID_ARI: u16 = 0x0e;
pub const PCI_EXT_CAP_ID_ATS: u16 = 0x0f;
pub const PCI_EXT_CAP_ID_SRIOV: u16 = 0x10;
pub const PCI_EXT_CAP_ID_PRI: u16 = 0x13;
pub const PCI_EXT_CAP_ID_REBAR: u16 = 0x15;
pub const PCI_EXT_CAP_ID_LTR: u16 = 0x18;
pub const PCI_EXT_CAP_ID_SECPCI: u16 = 0x19;
pub const PCI_EXT_CAP_ID_PASID: u16 = 0x1b;
pub const PCI_EXT_CAP_ID_DPC: u16 = 0x1d;
pub const PCI_EXT_CAP_ID_L1SS: u16 = 0x1e;
pub const PCI_EXT_CAP_ID_PTM: u16 = 0x1f;
pub const PCI_EXT_CAP_ID_DVSEC: u16 = 0x23;
pub const PCI_EXT_CAP_ID_DLF: u16 = 0x25;
pub const PCI_EXT_CAP_ID_PL_16GT: u16 = 0x26;

bitflags! {
    /// PCI_COMMAND.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Command: u16 {
        const IO = 0x0001;
        const MEMORY = 0x0002;
        const MASTER = 0x0004;
        const SPECIAL = 0x0008;
        const INVALIDATE = 0x0010;
        const VGA_PALETTE = 0x0020;
        const PARITY = 0x0040;
        const WAIT = 0x0080;
        const SERR = 0x0100;
        const FAST_BACK = 0x0200;
        const INTX_DISABLE = 0x0400;
        const _ = !0;
    }

    /// PCI_STATUS.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u16 {
        const IMM_READY = 0x0001;
        const INTERRUPT = 0x0008;
        const CAP_LIST = 0x0010;
        const MHZ66 = 0x0020;
        const FAST_BACK = 0x0080;
        const PARITY = 0x0100;
        const SIG_TARGET_ABORT = 0x0800;
        const REC_TARGET_ABORT = 0x1000;
        const REC_MASTER_ABORT = 0x2000;
        const SIG_SYSTEM_ERROR = 0x4000;
        const DETECTED_PARITY = 0x8000;
        const _ = !0;
    }

    /// PCI_PM_PMC: power management capabilities.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Pmc: u16 {
        const PME_CLOCK = 0x0008;
        const DSI = 0x0020;
        const D1 = 0x0200;
        const D2 = 0x0400;
        const PME_D0 = 0x0800;
        const PME_D1 = 0x1000;
        const PME_D2 = 0x2000;
        const PME_D3HOT = 0x4000;
        const PME_D3COLD = 0x8000;
        const _ = !0;
    }

    /// PCI_PM_CTRL (PMCSR).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Pmcsr: u16 {
        /// PCI_PM_CTRL_STATE_MASK: D0..D3hot in bits 1:0.
        const STATE_MASK = 0x0003;
        /// PCI_PM_CTRL_NO_SOFT_RESET: D3hot→D0 does not reset the function.
        const NO_SOFT_RESET = 0x0008;
        const PME_ENABLE = 0x0100;
        const PME_STATUS = 0x8000;
        const _ = !0;
    }

    /// PCI_EXP_DEVCAP.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DevCap: u32 {
        const PAYLOAD = 0x0000_0007;
        const RBER = 0x0000_8000;
        /// PCI_EXP_DEVCAP_FLR: Function Level Reset capable.
        const FLR = 0x1000_0000;
        const _ = !0;
    }

    /// PCI_EXP_DEVCTL.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DevCtl: u16 {
        const CERE = 0x0001;
        const NFERE = 0x0002;
        const FERE = 0x0004;
        const URRE = 0x0008;
        const RELAX_EN = 0x0010;
        const EXT_TAG = 0x0100;
        const NOSNOOP_EN = 0x0800;
        /// PCI_EXP_DEVCTL_BCR_FLR: bridge config retry / initiate FLR.
        const BCR_FLR = 0x8000;
        const _ = !0;
    }

    /// PCI_EXP_DEVSTA.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DevSta: u16 {
        const CED = 0x0001;
        const NFED = 0x0002;
        const FED = 0x0004;
        const URD = 0x0008;
        const AUXPD = 0x0010;
        /// PCI_EXP_DEVSTA_TRPND: transactions pending.
        const TRPND = 0x0020;
        const _ = !0;
    }

    /// PCI_EXP_LNKCAP.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LnkCap: u32 {
        /// PCI_EXP_LNKCAP_SLS: max link speed field.
        const SLS = 0x0000_000f;
        const MLW = 0x0000_03f0;
        /// PCI_EXP_LNKCAP_DLLLARC: data link layer link active reporting capable.
        const DLLLARC = 0x0010_0000;
        const _ = !0;
    }

    /// PCI_EXP_LNKSTA.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LnkSta: u16 {
        const CLS = 0x000f;
        const NLW = 0x03f0;
        const LT = 0x0800;
        const SLC = 0x1000;
        /// PCI_EXP_LNKSTA_DLLLA: data link layer link active.
        const DLLLA = 0x2000;
        const LBMS = 0x4000;
        const LABS = 0x8000;
        const _ = !0;
    }

    /// PCI_EXP_RTCAP.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RtCap: u16 {
        /// PCI_EXP_RTCAP_RRS_SV (was CRSVIS): RRS software visibility supported.
        const RRS_SV = 0x0001;
        const _ = !0;
    }

    /// PCI_EXP_RTCTL.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RtCtl: u16 {
        const SECEE = 0x0001;
        const SENFEE = 0x0002;
        const SEFEE = 0x0004;
        const PMEIE = 0x0008;
        /// PCI_EXP_RTCTL_RRS_SVE (was CRSSVE): RRS software visibility enable.
        const RRS_SVE = 0x0010;
        const _ = !0;
    }

    /// PCI_AF_CAP.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AfCap: u8 {
        const TP = 0x01;
        const FLR = 0x02;
        const _ = !0;
    }

    /// PCI_AF_CTRL.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AfCtrl: u8 {
        const FLR = 0x01;
        const _ = !0;
    }

    /// PCI_AF_STATUS.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AfStatus: u8 {
        const TP = 0x01;
        const _ = !0;
    }

    /// PCI_BRIDGE_CONTROL.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BridgeCtl: u16 {
        const PARITY = 0x01;
        const SERR = 0x02;
        const ISA = 0x04;
        const VGA = 0x08;
        const MASTER_ABORT = 0x20;
        /// PCI_BRIDGE_CTL_BUS_RESET: secondary bus reset.
        const BUS_RESET = 0x40;
        const FAST_BACK = 0x80;
        const _ = !0;
    }
}

/// PCIe device/port type from PCI_EXP_FLAGS.
pub fn exp_type_name(t: u8) -> &'static str {
    match t {
        PCI_EXP_TYPE_ENDPOINT => "Endpoint",
        PCI_EXP_TYPE_LEG_END => "Legacy Endpoint",
        PCI_EXP_TYPE_ROOT_PORT => "Root Port",
        PCI_EXP_TYPE_UPSTREAM => "Upstream Port",
        PCI_EXP_TYPE_DOWNSTREAM => "Downstream Port",
        PCI_EXP_TYPE_PCI_BRIDGE => "PCIe-to-PCI Bridge",
        PCI_EXP_TYPE_PCIE_BRIDGE => "PCI-to-PCIe Bridge",
        PCI_EXP_TYPE_RC_END => "Root Complex Integrated Endpoint",
        PCI_EXP_TYPE_RC_EC => "Root Complex Event Collector",
        _ => "unknown",
    }
}

/// Capability names as setpci spells them (`CAP_PM`, `ECAP_AER`).
pub fn cap_name(id: u8) -> &'static str {
    match id {
        PCI_CAP_ID_PM => "PM",
        PCI_CAP_ID_AGP => "AGP",
        PCI_CAP_ID_VPD => "VPD",
        PCI_CAP_ID_MSI => "MSI",
        PCI_CAP_ID_PCIX => "PCIX",
        PCI_CAP_ID_HT => "HT",
        PCI_CAP_ID_VNDR => "VNDR",
        PCI_CAP_ID_SSVID => "SSVID",
        PCI_CAP_ID_EXP => "EXP",
        PCI_CAP_ID_MSIX => "MSIX",
        PCI_CAP_ID_SATA => "SATA",
        PCI_CAP_ID_AF => "AF",
        PCI_CAP_ID_EA => "EA",
        _ => "?",
    }
}

pub fn ext_cap_name(id: u16) -> &'static str {
    match id {
        PCI_EXT_CAP_ID_ERR => "AER",
        PCI_EXT_CAP_ID_VC => "VC",
        PCI_EXT_CAP_ID_DSN => "DSN",
        PCI_EXT_CAP_ID_PWR => "PWR",
        PCI_EXT_CAP_ID_VNDR => "VNDR",
        PCI_EXT_CAP_ID_ACS => "ACS",
        PCI_EXT_CAP_ID_ARI => "ARI",
        PCI_EXT_CAP_ID_ATS => "ATS",
        PCI_EXT_CAP_ID_SRIOV => "SRIOV",
        PCI_EXT_CAP_ID_PRI => "PRI",
        PCI_EXT_CAP_ID_REBAR => "REBAR",
        PCI_EXT_CAP_ID_LTR => "LTR",
        PCI_EXT_CAP_ID_SECPCI => "SECPCI",
        PCI_EXT_CAP_ID_PASID => "PASID",
        PCI_EXT_CAP_ID_DPC => "DPC",
        PCI_EXT_CAP_ID_L1SS => "L1SS",
        PCI_EXT_CAP_ID_PTM => "PTM",
        PCI_EXT_CAP_ID_DVSEC => "DVSEC",
        PCI_EXT_CAP_ID_DLF => "DLF",
        PCI_EXT_CAP_ID_PL_16GT => "16GT",
        _ => "?",
    }
}
