//! Putting a VM's functions back on the bus (`ensure_present`: rescan, rebind) and taking
//! them off (`remove`).

use super::*;

impl PhaseRunner<'_> {
    /// The rescan attribute of the bus a missing function belongs on: the bridge whose
    /// secondary bus it is (`<bridge>/pci_bus/<dddd:bb>/rescan`), else the global one.
    pub(super) fn rescan_attr_for(&self, topo: Option<&Topology>, bdf: Bdf) -> PathBuf {
        let bus = format!("{:04x}:{:02x}", bdf.domain, bdf.bus);
        if let Some(topo) = topo {
            for dev in topo.devices.values() {
                if dev.secondary_bus_dir.as_deref() == Some(bus.as_str()) {
                    let p = dev.dir.join("pci_bus").join(&bus).join("rescan");
                    if std::fs::symlink_metadata(&p).is_ok() {
                        return p;
                    }
                }
            }
        }
        self.host.global_rescan()
    }

    pub(super) fn ensure_present(&mut self, devices: &[PlannedDevice], present_timeout: Duration) {
        let t0 = Instant::now();
        let missing: Vec<PlannedDevice> = devices
            .iter()
            .filter(|d| !is_present(self.host, d.bdf))
            .cloned()
            .collect();
        for d in devices.iter().filter(|d| is_present(self.host, d.bdf)) {
            self.record(ActionRecord {
                action: Action::EnsurePresent,
                device: d.bdf,
                result: ActionResult::Skipped,
                detail: "present".into(),
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: 0.0,
            });
        }
        if missing.is_empty() {
            return;
        }
        let mut missing_ok = Vec::new();
        for d in &missing {
            if !self.out_of_budget(Action::EnsurePresent, d) {
                missing_ok.push(d.clone());
            }
        }
        if missing_ok.is_empty() {
            return;
        }
        let bound = present_timeout.min(self.remaining());
        let topo = Topology::scan(self.host).ok();
        let mut attrs: Vec<PathBuf> = missing_ok
            .iter()
            .map(|d| self.rescan_attr_for(topo.as_ref(), d.bdf))
            .collect();
        attrs.sort();
        attrs.dedup();
        let k0 = Instant::now();
        let mut write_errors = Vec::new();
        for a in &attrs {
            self.set_progress(format!("rescan of {}", a.display()));
            let left = bound.saturating_sub(t0.elapsed());
            let r = self
                .journal
                .sysfs_announce(None, a, "1")
                .and_then(|make| match make {
                    true => bounded::write(a, "1", left),
                    false => Ok(WriteOutcome::Done),
                });
            let rel = self.rel(a).display().to_string();
            match r {
                Ok(WriteOutcome::Done) => {}
                Ok(WriteOutcome::Refused(errno)) => write_errors.push(format!(
                    "rescan via {rel} refused: {}",
                    std::io::Error::from_raw_os_error(errno)
                )),
                Ok(WriteOutcome::Pending { pid }) => write_errors.push(format!(
                    "rescan via {rel} still blocked in the kernel after {} ms (another remove \
                     or rescan holds the bus; left to finish in pid {pid})",
                    ms_int(left)
                )),
                Err(e) => write_errors.push(format!("rescan via {rel}: {}", e.one_line())),
            }
        }
        let host = self.host;
        let left = bound.saturating_sub(t0.elapsed());
        let want: Vec<Bdf> = missing_ok.iter().map(|d| d.bdf).collect();
        self.set_progress(format!("waiting for {} device(s) to appear", want.len()));
        let _ = wait::poll(
            "the devices to appear",
            left,
            Duration::from_millis(2),
            || Ok(want.iter().all(|b| is_present(host, *b)).then_some(())),
        );
        let kernel = k0.elapsed();
        let via: Vec<String> = attrs
            .iter()
            .map(|a| self.rel(a).display().to_string())
            .collect();
        for d in &missing_ok {
            let (result, detail) = if is_present(self.host, d.bdf) {
                (
                    ActionResult::Done,
                    format!(
                        "was missing; back after a rescan via {} in {} ms",
                        via.join(", "),
                        ms_int(t0.elapsed())
                    ),
                )
            } else {
                let why = if write_errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", write_errors.join("; "))
                };
                (
                    ActionResult::Failed,
                    format!(
                        "missing and not back {} ms after a rescan via {}{why}",
                        ms_int(bound),
                        via.join(", ")
                    ),
                )
            };
            self.record(ActionRecord {
                action: Action::EnsurePresent,
                device: d.bdf,
                result,
                detail,
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: ms(kernel),
            });
        }
    }

    pub(super) fn remove_device(&mut self, d: &PlannedDevice, remove_timeout: Duration) {
        let t0 = Instant::now();
        if !is_present(self.host, d.bdf) {
            self.record(ActionRecord {
                action: Action::Remove,
                device: d.bdf,
                result: ActionResult::Skipped,
                detail: "not on the bus, nothing to remove".into(),
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: 0.0,
            });
            return;
        }
        if self.out_of_budget(Action::Remove, d) {
            return;
        }
        let bound = remove_timeout.min(self.remaining());
        let pci = d.bdf;
        self.set_progress(format!("remove of {}", d.bdf));
        // Two hooks never work on one device at once (the engine's per-device lock).
        let lock = match crate::reset::lock::lock(self.host, &pci, bound / 2) {
            Ok(l) => l,
            Err(e) => {
                self.record(ActionRecord {
                    action: Action::Remove,
                    device: d.bdf,
                    result: ActionResult::Failed,
                    detail: format!("not removed: {}", e.one_line()),
                    method: None,
                    ms: ms(t0.elapsed()),
                    kernel_ms: 0.0,
                });
                return;
            }
        };
        let attr = self.host.device_dir(&pci).join("remove");
        let k0 = Instant::now();
        let left = bound.saturating_sub(t0.elapsed());
        let r = self
            .journal
            .sysfs_announce(Some(&d.bdf), &attr, "1")
            .and_then(|make| match make {
                true => bounded::write(&attr, "1", left),
                false => Ok(WriteOutcome::Done),
            });
        let host = self.host;
        let gone = |left: Duration| {
            wait::poll(
                "the device to leave the bus",
                left,
                Duration::from_millis(2),
                || Ok((!is_present(host, d.bdf)).then_some(())),
            )
            .is_ok()
        };
        let (result, detail) = match r {
            Ok(WriteOutcome::Done) if gone(bound.saturating_sub(t0.elapsed())) => (
                ActionResult::Done,
                format!("removed in {} ms", ms_int(t0.elapsed())),
            ),
            Ok(WriteOutcome::Done) => (
                ActionResult::Failed,
                format!(
                    "remove accepted but the device is still listed after {} ms",
                    ms_int(bound)
                ),
            ),
            Ok(WriteOutcome::Refused(errno)) => (
                ActionResult::Failed,
                format!(
                    "remove refused: {}",
                    std::io::Error::from_raw_os_error(errno)
                ),
            ),
            Ok(WriteOutcome::Pending { pid }) => (
                ActionResult::Failed,
                format!(
                    "remove still waiting in the kernel after {} ms: QEMU has not released the \
                     device yet; the remove finishes when it does (pid {pid})",
                    ms_int(left)
                ),
            ),
            Err(e) => (ActionResult::Failed, format!("remove: {}", e.one_line())),
        };
        drop(lock);
        self.record(ActionRecord {
            action: Action::Remove,
            device: d.bdf,
            result,
            detail,
            method: None,
            ms: ms(t0.elapsed()),
            kernel_ms: ms(k0.elapsed()),
        });
    }
}
