//! The `resetlab` binary: the command line over the library.

mod cli;

// The library's modules, so that `crate::pci`, `crate::reset`, … read the same in
// the binary's `cli` as in the library.
use resetlab::{
    amd, bench, bounded_read, cleanup, doctor, error, experiment, hook, inventory, journal,
    machine, pci, pve, qmp, report, reset, sim, snapshot, sys, text,
};

fn main() {
    // Config writes to a twin wait for its model (the PCI layer asks no one else; on real sysfs
    // the hook does nothing).
    resetlab::sim::model::install_config_write_hook();
    std::process::exit(cli::main());
}
