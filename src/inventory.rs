//! What `list` and `probe` report: per device, what the kernel offers, every
//! resetlab method's verdict with its reason and blast radius, and who holds it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::amd::regs::RegsDb;
use crate::machine::Machine;
use crate::pci::caps::Decoded;
use crate::pci::holders::{Holder, OpenFiles};
use crate::pci::names;
use crate::pci::regs::{cap_name, exp_type_name, ext_cap_name};
use crate::pci::resource::Resource;
use crate::pci::sysfs::{FirmwareNode, Parent};
use crate::pci::{Bdf, Device, Topology};
use crate::reset::{self, Analysis, Configs, ResetOptions, Verdict};

/// One device as `list --json` shows it (schema in docs/cli.md).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeviceReport {
    pub bdf: Bdf,
    pub vendor: String,
    pub device: String,
    pub class: String,
    pub revision: Option<String>,
    pub subsystem: Option<String>,
    pub name: String,
    pub class_name: String,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    /// `reset_method` as the kernel shows it; empty when absent.
    pub kernel_reset_methods: Vec<String>,
    /// Whether the kernel created the `reset` attribute at all.
    pub kernel_reset_attr: bool,
    /// What the kernel's own list means here, when it is misleading or empty.
    pub kernel_note: Option<String>,
    pub power_state: Option<String>,
    pub methods: BTreeMap<&'static str, Verdict>,
    pub holders: Vec<Holder>,
    pub parent: Parent,
    pub bus_peers: Vec<Bdf>,
    /// An AMD GPU's family, MP1 version and mode-2 message (amd/family.rs);
    /// for an id regs/ does not know, the files that might fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amd_family: Option<crate::amd::family::FamilyNote>,
}

/// `probe`: the report plus the raw state behind it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbeReport {
    #[serde(flatten)]
    pub report: DeviceReport,
    pub d3cold_allowed: Option<bool>,
    pub power_control: Option<String>,
    pub runtime_status: Option<String>,
    pub driver_override: Option<String>,
    pub resources: Vec<Resource>,
    pub firmware_node: Option<FirmwareNode>,
    pub config: Option<ConfigView>,
    pub config_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CapView {
    /// The capability id (PCI_CAP_ID_* or PCI_EXT_CAP_ID_*).
    pub id: u16,
    pub name: String,
    /// Its offset in config space.
    pub offset: u16,
}

/// Decoded config registers, with the capability lists by name.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConfigView {
    #[serde(flatten)]
    pub decoded: Decoded,
    pub pcie_type: Option<&'static str>,
    pub capabilities: Vec<CapView>,
    pub extended_capabilities: Vec<CapView>,
    pub chain_faults: Vec<String>,
}

/// Explains the kernel's list where it misleads (see FACTS.md: methods are
/// probed at enumeration, before the siblings of function 0 exist).
pub fn kernel_note(dev: &Device) -> Option<String> {
    let methods = dev.reset_method.clone().unwrap_or_default();
    if !dev.has_reset && methods.is_empty() {
        return Some(
            "no 'reset' attribute: the kernel found no reset method at enumeration, \
             so neither it nor Proxmox can reset this function"
                .to_string(),
        );
    }
    if methods.iter().any(|m| m == "bus") && !dev.bus_peers.is_empty() {
        let peers: Vec<String> = dev.bus_peers.iter().map(|b| b.short()).collect();
        let only = methods.iter().all(|m| m == "bus");
        return Some(format!(
            "the kernel lists 'bus' but it fails with ENOTTY (Inappropriate ioctl for device): \
             it probed the method at enumeration, before the sibling function(s) {} appeared, and \
             pci_parent_bus_reset refuses to reset one function while others share the bus{}",
            peers.join(", "),
            if only {
                "; this is the device's only kernel method, so 'reset' fails"
            } else {
                ""
            }
        ));
    }
    None
}

fn hex4(v: u16) -> String {
    format!("{v:04x}")
}

pub fn device_report(
    host: &Machine,
    topo: &Topology,
    configs: &Configs,
    open: &OpenFiles,
    regs: &RegsDb,
    dev: &Device,
    force: bool,
) -> DeviceReport {
    let opts = ResetOptions {
        force,
        ..Default::default()
    };
    let a = Analysis {
        host,
        topo,
        dev,
        configs,
        force,
        regs,
        opts: &opts,
        arg: None,
    };
    let holders = dev
        .iommu_group
        .map(|g| open.holders_of(&host.vfio_group_node(g)))
        .unwrap_or_default();
    DeviceReport {
        bdf: dev.bdf,
        vendor: hex4(dev.vendor),
        device: hex4(dev.device),
        class: format!("{:06x}", dev.class),
        revision: dev.revision.map(|r| format!("{r:02x}")),
        subsystem: match (dev.subsystem_vendor, dev.subsystem_device) {
            (Some(v), Some(d)) => Some(format!("{v:04x}:{d:04x}")),
            _ => None,
        },
        name: names::device_name(dev.vendor, dev.device),
        class_name: names::class_name(dev.class),
        driver: dev.driver.clone(),
        iommu_group: dev.iommu_group,
        kernel_reset_methods: dev.reset_method.clone().unwrap_or_default(),
        kernel_reset_attr: dev.has_reset,
        kernel_note: kernel_note(dev),
        power_state: dev.power_state.clone(),
        methods: reset::probe_all(&a),
        holders,
        parent: dev.parent.clone(),
        bus_peers: dev.bus_peers.clone(),
        amd_family: crate::amd::family::describe(regs, host, dev),
    }
}

/// Reports for every device, sorted by IOMMU group then address.
pub fn list(host: &Machine, topo: &Topology, regs: &RegsDb, force: bool) -> Vec<DeviceReport> {
    let configs = Configs::load(topo, topo.devices.keys());
    let open = OpenFiles::scan_vfio(host);
    let mut v: Vec<DeviceReport> = topo
        .devices
        .values()
        .map(|d| device_report(host, topo, &configs, &open, regs, d, force))
        .collect();
    v.sort_by_key(|r| (r.iommu_group.is_none(), r.iommu_group, r.bdf));
    v
}

fn cap_view(id: u16, name: &str, offset: u16) -> CapView {
    CapView {
        id,
        name: name.to_string(),
        offset,
    }
}

pub fn probe(
    host: &Machine,
    topo: &Topology,
    regs: &RegsDb,
    dev: &Device,
    force: bool,
) -> ProbeReport {
    let mut want = vec![dev.bdf];
    if let Parent::Bridge(b) = &dev.parent {
        want.push(*b);
    }
    let configs = Configs::load(topo, want.iter());
    let open = OpenFiles::scan_vfio(host);
    let report = device_report(host, topo, &configs, &open, regs, dev, force);
    let (config, config_error) = match configs.get(&dev.bdf) {
        Ok(d) => (
            Some(ConfigView {
                pcie_type: d.exp.map(|e| exp_type_name(e.port_type())),
                capabilities: d
                    .caps
                    .caps
                    .iter()
                    .map(|c| cap_view(c.id as u16, cap_name(c.id), c.offset))
                    .collect(),
                extended_capabilities: d
                    .caps
                    .ext
                    .iter()
                    .map(|c| cap_view(c.id, ext_cap_name(c.id), c.offset))
                    .collect(),
                chain_faults: d.caps.faults.iter().map(|f| f.to_string()).collect(),
                decoded: d.clone(),
            }),
            None,
        ),
        Err(e) => (None, Some(e)),
    };
    ProbeReport {
        report,
        d3cold_allowed: dev.d3cold_allowed,
        power_control: dev.power_control.clone(),
        runtime_status: dev.runtime_status.clone(),
        driver_override: dev.driver_override.clone(),
        resources: dev
            .resources
            .iter()
            .filter(|r| !r.is_empty())
            .copied()
            .collect(),
        firmware_node: dev.firmware_node.clone(),
        config,
        config_error,
    }
}
