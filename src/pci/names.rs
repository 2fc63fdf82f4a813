//! Names from the pci.ids database (the `pci-ids` crate embeds the maintained
//! database at build time), as lspci prints them.

use pci_ids::FromId;

/// `Vendor Device`, falling back to the ids when the database lacks them.
pub fn device_name(vendor: u16, device: u16) -> String {
    match pci_ids::Device::from_vid_pid(vendor, device) {
        Some(d) => format!("{} {}", d.vendor().name(), d.name()),
        None => match pci_ids::Vendor::from_id(vendor) {
            Some(v) => format!("{} Device {device:04x}", v.name()),
            None => format!("Device {vendor:04x}:{device:04x}"),
        },
    }
}

/// The subclass name of a 24-bit class code (`VGA compatible controller`).
pub fn class_name(class: u32) -> String {
    let (base, sub) = ((class >> 16) as u8, (class >> 8) as u8);
    match pci_ids::Subclass::from_cid_sid(base, sub) {
        Some(s) => s.name().to_string(),
        None => match pci_ids::Class::from_id(base) {
            Some(c) => c.name().to_string(),
            None => format!("Class {:04x}", class >> 8),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_igpu() {
        let n = device_name(0x1002, 0x1900);
        assert!(n.starts_with("Advanced Micro Devices"), "{n}");
        assert_eq!(class_name(0x030000), "VGA compatible controller");
        assert_eq!(device_name(0xfff0, 0x1234), "Device fff0:1234");
    }
}
