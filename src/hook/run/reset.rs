//! `reset_if_dirty` / `reset`: whether a function looks dirty, and the bounded reset chain.

use super::*;

impl PhaseRunner<'_> {
    /// `device_check`: the device's own vendor health checks (for the 780M, regs/ `[[health]]`:
    /// GRBM_STATUS.GUI_ACTIVE and the SMU mailbox through BAR 5). `Some(why)` when one fails.
    pub(super) fn device_looks_dirty(&mut self, d: &PlannedDevice) -> Option<String> {
        if self.regs.is_none() {
            self.regs = RegsDb::load(&self.regs_dirs).ok();
        }
        let regs = self.regs.as_ref()?;
        let topo = Topology::scan(self.host).ok()?;
        let dev = topo.get(&d.bdf)?;
        let opts = ResetOptions::default();
        let mut ctx = crate::reset::ResetCtx {
            host: self.host,
            topo: &topo,
            dev,
            journal: &mut self.journal,
            opts: &opts,
            regs,
            arg: None,
        };
        let items = crate::reset::amd_health::check(&mut ctx)?;
        crate::reset::health::Health::from_items(items).failure()
    }

    pub(super) fn reset_device(
        &mut self,
        d: &PlannedDevice,
        action: Action,
        policy_path: Option<&Path>,
        device_check: bool,
    ) {
        let t0 = Instant::now();
        let lookup = self.store.read(d.bdf);
        if let Some(w) = lookup.warning() {
            self.log.warn(format!("{}: {w}", d.bdf));
        }
        let looks_dirty = if action == Action::ResetIfDirty
            && !lookup.needs_reset()
            && device_check
            && is_present(self.host, d.bdf)
        {
            self.device_looks_dirty(d)
        } else {
            None
        };
        if let Some(why) = &looks_dirty {
            self.log.warn(format!(
                "{}: recorded clean, but the device does not look clean ({why}): resetting it \
                 (device_check)",
                d.bdf
            ));
        }
        if action == Action::ResetIfDirty && !lookup.needs_reset() && looks_dirty.is_none() {
            let detail = match &lookup {
                StateLookup::Found(r) if r.last_method.as_deref() == Some("release") => format!(
                    "clean ({}), no reset needed",
                    r.note.as_deref().unwrap_or("released by the guest")
                ),
                StateLookup::Found(r) => format!(
                    "clean (last reset by {}), no reset needed",
                    r.last_method.as_deref().unwrap_or("?")
                ),
                _ => "clean (no record since boot), no reset needed".to_string(),
            };
            self.record(ActionRecord {
                action,
                device: d.bdf,
                result: ActionResult::Skipped,
                detail,
                method: None,
                ms: ms(t0.elapsed()),
                kernel_ms: 0.0,
            });
            return;
        }
        if self.out_of_budget(action, d) {
            self.mark(d.bdf, DeviceState::Dirty, None);
            return;
        }
        let fail = |this: &mut Self, detail: String, method: Option<String>, kernel: f64| {
            this.record(ActionRecord {
                action,
                device: d.bdf,
                result: ActionResult::Failed,
                detail,
                method: method.clone(),
                ms: ms(t0.elapsed()),
                kernel_ms: kernel,
            });
            this.mark(d.bdf, DeviceState::Dirty, method.as_deref());
        };
        if !is_present(self.host, d.bdf) {
            fail(self, "not reset: not on the bus".into(), None, 0.0);
            return;
        }
        let chain = match resolve_chain(&d.chain, d.kind, d.bdf, policy_path) {
            Ok(c) => c,
            Err(e) => {
                fail(self, format!("not reset: {}", e.one_line()), None, 0.0);
                return;
            }
        };
        if self.regs.is_none() {
            match RegsDb::load(&self.regs_dirs) {
                Ok(r) => self.regs = Some(r),
                Err(e) => {
                    let detail = format!("not reset: register database: {}", e.one_line());
                    fail(self, detail, None, 0.0);
                    return;
                }
            }
        }
        let pci = d.bdf;
        let mut tried: Vec<String> = chain
            .unavailable
            .iter()
            .map(|m| format!("{m}: not in this build"))
            .collect();
        let mut last: Option<String> = None;
        let mut kernel = 0.0;
        let remaining = self.remaining();
        let labels: Vec<String> = chain.specs.iter().map(|s| s.label()).collect();
        let not_started = |this: &Self, label: &str| {
            format!(
                "{label}: not started, the phase's budget of {} s is used up",
                this.budget().as_secs_f64()
            )
        };
        if remaining.is_zero() {
            tried.extend(labels.iter().map(|l| not_started(self, l)));
        } else if let Some(regs) = &self.regs {
            self.set_progress(format!("reset of {} by {}", d.bdf, labels.join(" → ")));
            // One chain, bounded as a whole by what is left of the phase (less the reserve).
            let opts = method_options(remaining);
            match run_chain(
                self.host,
                regs,
                &pci,
                &chain.specs,
                &opts,
                &mut self.journal,
            ) {
                Err(e) => {
                    // A chain-level refusal (in use, host driver, lock, gone): every method
                    // would meet it, so the chain stopped there.
                    let label = labels.first().cloned().unwrap_or_default();
                    tried.push(format!("{label}: {}", e.one_line()));
                    last = Some(label);
                }
                Ok(report) => {
                    for run in &report.runs {
                        kernel += run.phases.reset_ms + run.phases.ready_ms;
                        if report.success {
                            continue;
                        }
                        let label = &run.method;
                        if !run.verdict.available {
                            tried.push(format!("{label}: does not apply ({})", run.verdict.reason));
                        } else if let Some(e) = &run.error {
                            last = Some(label.clone());
                            tried.push(format!("{label}: {e}"));
                        } else if let Some(f) = run.health.as_ref().and_then(|h| h.failure()) {
                            last = Some(label.clone());
                            tried.push(format!("{label}: unhealthy after it ({f})"));
                        }
                    }
                    if let Some(s) = &report.stopped {
                        // Gone, or refused, after the first methods ran: the rest would meet it.
                        last = Some(s.method.clone());
                        tried.push(format!("{}: {}", s.method, s.error));
                    }
                    tried.extend(report.not_started.iter().map(|l| not_started(self, l)));
                    if let Some(m) = report.method {
                        let skipped = if tried.is_empty() {
                            String::new()
                        } else {
                            format!(" (before it: {})", tried.join("; "))
                        };
                        self.record(ActionRecord {
                            action,
                            device: d.bdf,
                            result: ActionResult::Done,
                            detail: format!(
                                "reset by {m} in {} ms{skipped}{}",
                                ms_int(t0.elapsed()),
                                if m.starts_with("smu_mode2") {
                                    MODE2_UNCONFIRMED
                                } else {
                                    ""
                                }
                            ),
                            method: Some(m.clone()),
                            ms: ms(t0.elapsed()),
                            kernel_ms: kernel,
                        });
                        self.mark(d.bdf, DeviceState::Clean, Some(&m));
                        return;
                    }
                }
            }
        }
        fail(
            self,
            format!(
                "not reset after {} ms: {}",
                ms_int(t0.elapsed()),
                tried.join("; ")
            ),
            last,
            kernel,
        );
    }
}
