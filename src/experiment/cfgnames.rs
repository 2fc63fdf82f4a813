//! Config-space register and capability names, spelled as setpci spells them.
//!
//! Source: pciutils `setpci.c`, `pci_reg_names[]` (offsets, widths, capability ids), which follows
//! Linux `include/uapi/linux/pci_regs.h` (`PCI_COMMAND`, `PCI_CAP_ID_*`, `PCI_EXT_CAP_ID_*`).
//! Names match case-insensitively, as in setpci (`strcasecmp`). CardBus header names are left out:
//! no device this project resets has a CardBus header.

/// A header register: name, byte offset, width in bytes.
pub(crate) const HEADER: &[(&str, u16, u8)] = &[
    // Common to every header type.
    ("VENDOR_ID", 0x00, 2),
    ("DEVICE_ID", 0x02, 2),
    ("COMMAND", 0x04, 2),
    ("STATUS", 0x06, 2),
    ("REVISION", 0x08, 1),
    ("CLASS_PROG", 0x09, 1),
    ("CLASS_DEVICE", 0x0a, 2),
    ("CACHE_LINE_SIZE", 0x0c, 1),
    ("LATENCY_TIMER", 0x0d, 1),
    ("HEADER_TYPE", 0x0e, 1),
    ("BIST", 0x0f, 1),
    ("BASE_ADDRESS_0", 0x10, 4),
    ("BASE_ADDRESS_1", 0x14, 4),
    ("CAPABILITIES", 0x34, 1),
    ("INTERRUPT_LINE", 0x3c, 1),
    ("INTERRUPT_PIN", 0x3d, 1),
    // Type 0 (endpoint) header only.
    ("BASE_ADDRESS_2", 0x18, 4),
    ("BASE_ADDRESS_3", 0x1c, 4),
    ("BASE_ADDRESS_4", 0x20, 4),
    ("BASE_ADDRESS_5", 0x24, 4),
    ("CARDBUS_CIS", 0x28, 4),
    ("SUBSYSTEM_VENDOR_ID", 0x2c, 2),
    ("SUBSYSTEM_ID", 0x2e, 2),
    ("ROM_ADDRESS", 0x30, 4),
    ("MIN_GNT", 0x3e, 1),
    ("MAX_LAT", 0x3f, 1),
    // Type 1 (bridge) header only.
    ("PRIMARY_BUS", 0x18, 1),
    ("SECONDARY_BUS", 0x19, 1),
    ("SUBORDINATE_BUS", 0x1a, 1),
    ("SEC_LATENCY_TIMER", 0x1b, 1),
    ("IO_BASE", 0x1c, 1),
    ("IO_LIMIT", 0x1d, 1),
    ("SEC_STATUS", 0x1e, 2),
    ("MEMORY_BASE", 0x20, 2),
    ("MEMORY_LIMIT", 0x22, 2),
    ("PREF_MEMORY_BASE", 0x24, 2),
    ("PREF_MEMORY_LIMIT", 0x26, 2),
    ("PREF_BASE_UPPER32", 0x28, 4),
    ("PREF_LIMIT_UPPER32", 0x2c, 4),
    ("IO_BASE_UPPER16", 0x30, 2),
    ("IO_LIMIT_UPPER16", 0x32, 2),
    ("BRIDGE_ROM_ADDRESS", 0x38, 4),
    ("BRIDGE_CONTROL", 0x3e, 2),
];

/// Standard capabilities (`PCI_CAP_ID_*`): setpci name, id.
pub(crate) const CAPS: &[(&str, u16)] = &[
    ("CAP_PM", 0x01),
    ("CAP_AGP", 0x02),
    ("CAP_VPD", 0x03),
    ("CAP_SLOTID", 0x04),
    ("CAP_MSI", 0x05),
    ("CAP_CHSWP", 0x06),
    ("CAP_PCIX", 0x07),
    ("CAP_HT", 0x08),
    ("CAP_VNDR", 0x09),
    ("CAP_DBG", 0x0a),
    ("CAP_CCRC", 0x0b),
    ("CAP_HOTPLUG", 0x0c),
    ("CAP_SSVID", 0x0d),
    ("CAP_AGP3", 0x0e),
    ("CAP_SECURE", 0x0f),
    ("CAP_EXP", 0x10),
    ("CAP_MSIX", 0x11),
    ("CAP_SATA", 0x12),
    ("CAP_AF", 0x13),
    ("CAP_EA", 0x14),
];

/// Extended capabilities (`PCI_EXT_CAP_ID_*`): setpci name, id.
pub(crate) const ECAPS: &[(&str, u16)] = &[
    ("ECAP_AER", 0x01),
    ("ECAP_VC", 0x02),
    ("ECAP_DSN", 0x03),
    ("ECAP_PB", 0x04),
    ("ECAP_RCLINK", 0x05),
    ("ECAP_RCILINK", 0x06),
    ("ECAP_RCEC", 0x07),
    ("ECAP_MFVC", 0x08),
    ("ECAP_VC2", 0x09),
    ("ECAP_RBCB", 0x0a),
    ("ECAP_VNDR", 0x0b),
    ("ECAP_ACS", 0x0d),
    ("ECAP_ARI", 0x0e),
    ("ECAP_ATS", 0x0f),
    ("ECAP_SRIOV", 0x10),
    ("ECAP_MRIOV", 0x11),
    ("ECAP_MCAST", 0x12),
    ("ECAP_PRI", 0x13),
    ("ECAP_REBAR", 0x15),
    ("ECAP_DPA", 0x16),
    ("ECAP_TPH", 0x17),
    ("ECAP_LTR", 0x18),
    ("ECAP_SECPCI", 0x19),
    ("ECAP_PMUX", 0x1a),
    ("ECAP_PASID", 0x1b),
    ("ECAP_LNR", 0x1c),
    ("ECAP_DPC", 0x1d),
    ("ECAP_L1PM", 0x1e),
    ("ECAP_PTM", 0x1f),
    ("ECAP_M_PCIE", 0x20),
    ("ECAP_FRS", 0x21),
    ("ECAP_RTR", 0x22),
    ("ECAP_DVSEC", 0x23),
    ("ECAP_VF_REBAR", 0x24),
    ("ECAP_DLNK", 0x25),
    ("ECAP_16GT", 0x26),
    ("ECAP_LMR", 0x27),
    ("ECAP_HIER_ID", 0x28),
    ("ECAP_NPEM", 0x29),
    ("ECAP_32GT", 0x2a),
    ("ECAP_IDE", 0x30),
    ("ECAP_64GT", 0x31),
];

/// Every name above, for "did you mean" suggestions.
pub(crate) fn all_names() -> impl Iterator<Item = &'static str> {
    HEADER
        .iter()
        .map(|h| h.0)
        .chain(CAPS.iter().map(|c| c.0))
        .chain(ECAPS.iter().map(|c| c.0))
}
