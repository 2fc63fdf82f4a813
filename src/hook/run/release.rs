//! `release` (pre-stop: the guest lets go over QMP, one wait for all) and `mark_dirty`.

use super::*;

impl PhaseRunner<'_> {
    /// `lock: backup` in the VM's config: vzdump started it paused for a backup
    /// (qemu-server `enforce_vm_running_for_backup`), so the guest never had the devices.
    pub(super) fn backup_start(&self) -> bool {
        self.setup
            .as_ref()
            .is_ok_and(|s| s.config.entries.get("lock").map(String::as_str) == Some("backup"))
    }

    /// `release`: one `device_del` per QEMU device (all sent first), then one wait for every
    /// `DEVICE_DELETED`, bounded by `release_timeout_s` and the phase's budget. Released: the
    /// function stays on the bus, bound to vfio-pci, and is recorded clean ("released by the
    /// guest"). Not released (timeout, refusal, no monitor): recorded dirty, post-stop resets it.
    pub(super) fn release_devices(&mut self, devices: &[PlannedDevice], vp: &VmPolicy) {
        let t0 = Instant::now();
        let mut targets = Vec::new();
        for d in devices {
            if vp.releases(d.bdf, d.kind) {
                targets.push(d.clone());
            } else {
                self.record(ActionRecord {
                    action: Action::Release,
                    device: d.bdf,
                    result: ActionResult::Skipped,
                    detail: "not an AMD GPU or its audio (and not in release_also): not released"
                        .into(),
                    method: None,
                    ms: 0.0,
                    kernel_ms: 0.0,
                });
            }
        }
        if targets.is_empty() {
            return;
        }
        if self.backup_start() {
            for d in &targets {
                self.record(ActionRecord {
                    action: Action::Release,
                    device: d.bdf,
                    result: ActionResult::Skipped,
                    detail: "VM started for a backup (lock: backup): QEMU ran paused and the guest never had it; no unplug request"
                        .into(),
                    method: None,
                    ms: ms(t0.elapsed()),
                    kernel_ms: 0.0,
                });
            }
            return;
        }
        if self.remaining().is_zero() {
            for d in &targets {
                self.out_of_budget(Action::Release, d);
                self.mark(d.bdf, DeviceState::Dirty, None);
            }
            return;
        }
        let bound = vp
            .release_timeout
            .min(self.remaining().saturating_sub(RELEASE_STATUS_RESERVE));
        let socket = self.opts.qmp_socket(self.vmid);
        self.set_progress(format!("release over {}", socket.display()));
        let t_rel = Instant::now();
        let outcome = crate::qmp::Client::connect(&socket, bound).and_then(|mut c| {
            let left = bound.saturating_sub(t_rel.elapsed());
            let found = c.passthrough_devices(left)?;
            Ok((c, found))
        });
        let (mut client, found) = match outcome {
            Ok(x) => x,
            Err(e) => {
                let why = format!(
                    "not released: QEMU's monitor {}: {}; recorded dirty",
                    socket.display(),
                    e.one_line()
                );
                for d in &targets {
                    self.release_failed(d, why.clone(), t0);
                }
                return;
            }
        };
        let mut ids: Vec<String> = Vec::new();
        let mut by_id: Vec<(String, PlannedDevice)> = Vec::new();
        for d in &targets {
            let pci = d.bdf;
            match found.iter().find(|p| p.host == Some(pci)) {
                Some(p) => {
                    ids.push(p.id.clone());
                    by_id.push((p.id.clone(), d.clone()));
                }
                None => self.record(ActionRecord {
                    action: Action::Release,
                    device: d.bdf,
                    result: ActionResult::Skipped,
                    detail: "QEMU passes it through no longer (unplugged before): nothing to release; its record is left as it was"
                        .into(),
                    method: None,
                    ms: ms(t0.elapsed()),
                    kernel_ms: 0.0,
                }),
            }
        }
        if ids.is_empty() {
            return;
        }
        let left = bound.saturating_sub(t_rel.elapsed());
        let report = crate::qmp::release::release(&mut client, &ids, &mut self.journal, left);
        drop(client);
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                let why = format!("not released: {}; recorded dirty", e.one_line());
                for (_, d) in &by_id {
                    self.release_failed(d, why.clone(), t0);
                }
                return;
            }
        };
        let status = report.vm_status.clone();
        for (id, d) in &by_id {
            use crate::qmp::release::Outcome;
            let Some(r) = report.devices.iter().find(|r| &r.id == id) else {
                continue;
            };
            match &r.outcome {
                Outcome::Released { ms: rel } => {
                    let note = format!("released by the guest in {} ms", *rel as u64);
                    let detail = if r.via == *id {
                        format!("{note} (device_del {id}, DEVICE_DELETED); stays on the bus, clean")
                    } else {
                        format!(
                            "{note} (device_del {} for its slot, DEVICE_DELETED {id}); stays on \
                             the bus, clean",
                            r.via
                        )
                    };
                    self.record(ActionRecord {
                        action: Action::Release,
                        device: d.bdf,
                        result: ActionResult::Done,
                        detail,
                        method: Some("release".into()),
                        ms: ms(t0.elapsed()),
                        kernel_ms: *rel,
                    });
                    if let Err(e) = self.store.mark_noted(
                        d.bdf,
                        DeviceState::Clean,
                        Some("release"),
                        Some(self.vmid),
                        Some(note),
                    ) {
                        let msg = format!("{}: cannot record its state: {}", d.bdf, e.one_line());
                        self.log.err(&msg);
                        self.errors.push(msg);
                    }
                }
                Outcome::TimedOut { bound_ms } => {
                    let why = crate::qmp::release::timeout_reason(status.as_deref());
                    self.release_failed(
                        d,
                        format!(
                            "not released within {bound_ms} ms ({id}): {why}; recorded dirty, post-stop resets it"
                        ),
                        t0,
                    );
                }
                Outcome::Refused { class, desc } => self.release_failed(
                    d,
                    format!(
                        "not released: QEMU refused device_del {id} ({class}: {desc}); recorded dirty, post-stop resets it"
                    ),
                    t0,
                ),
                Outcome::DryRun => {}
            }
        }
    }

    pub(super) fn release_failed(&mut self, d: &PlannedDevice, detail: String, t0: Instant) {
        self.record(ActionRecord {
            action: Action::Release,
            device: d.bdf,
            result: ActionResult::Failed,
            detail,
            method: Some("release".into()),
            ms: ms(t0.elapsed()),
            kernel_ms: 0.0,
        });
        let last = match self.store.read(d.bdf) {
            StateLookup::Found(r) => r.last_method,
            _ => None,
        };
        self.mark(d.bdf, DeviceState::Dirty, last.as_deref());
    }

    pub(super) fn mark_dirty(&mut self, d: &PlannedDevice) {
        let t0 = Instant::now();
        if self.backup_start() {
            self.record(ActionRecord {
                action: Action::MarkDirty,
                device: d.bdf,
                result: ActionResult::Skipped,
                detail: "VM started for a backup (lock: backup): the guest does not run, nothing marked dirty"
                    .into(),
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: 0.0,
            });
            return;
        }
        let last = match self.store.read(d.bdf) {
            StateLookup::Found(r) => r.last_method,
            _ => None,
        };
        match self
            .store
            .mark(d.bdf, DeviceState::Dirty, last.as_deref(), Some(self.vmid))
        {
            Ok(_) => self.record(ActionRecord {
                action: Action::MarkDirty,
                device: d.bdf,
                result: ActionResult::Done,
                detail: format!(
                    "marked dirty (the guest has it) in {:.1} ms",
                    ms(t0.elapsed())
                ),
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: 0.0,
            }),
            Err(e) => self.record(ActionRecord {
                action: Action::MarkDirty,
                device: d.bdf,
                result: ActionResult::Failed,
                detail: format!("cannot record its state: {}", e.one_line()),
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: 0.0,
            }),
        }
    }
}
