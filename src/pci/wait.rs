//! Bounded polling. Every wait has a bound, and the bound is in the error.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pci::config::ConfigAccess;
use crate::pci::regs::*;

/// Polls `f` until it returns `Some`, sleeping 1 ms at first and doubling up
/// to `max_interval`, for at most `bound`; the timeout names `what` and the bound.
pub fn poll<T>(
    what: &str,
    bound: Duration,
    max_interval: Duration,
    f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    poll_for(bound, Duration::from_millis(1), max_interval, f)?.ok_or_else(|| Error::Timeout {
        what: what.to_string(),
        bound_ms: bound.as_millis() as u64,
    })
}

/// The one bounded wait under [`poll`], for a caller whose running out is not a timeout
/// error (a lock wait ends in a refusal naming the holder, a power-state watch reports the
/// deepest state it saw): calls `f` until it returns `Some`, sleeping `first` at first and
/// doubling up to `max_interval`, and never sleeping past `bound`; `None` once it is spent.
pub fn poll_for<T>(
    bound: Duration,
    first: Duration,
    max_interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let start = Instant::now();
    let mut delay = first;
    loop {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        let spent = start.elapsed();
        if spent >= bound {
            return Ok(None);
        }
        std::thread::sleep(delay.min(bound - spent));
        delay = (delay * 2).min(max_interval);
    }
}

/// `pci_dev_wait` (drivers/pci/pci.c): after a reset, poll config space until
/// the function answers. With RRS Software Visibility enabled on the root
/// port, a Vendor ID of 0x0001 means "retry"; otherwise the function is ready
/// once COMMAND no longer reads all-ones.
pub fn wait_ready(
    cfg: &dyn ConfigAccess,
    rrs: bool,
    bound: Duration,
    what: &str,
) -> Result<Duration> {
    let start = Instant::now();
    poll(
        &format!("{what} to answer config reads"),
        bound,
        Duration::from_millis(64),
        || {
            if rrs {
                let id = cfg.read16(PCI_VENDOR_ID)?;
                if id == 0x0001 {
                    return Ok(None);
                }
            }
            let cmd = cfg.read16(PCI_COMMAND)?;
            Ok((cmd != 0xffff).then_some(()))
        },
    )?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::MemConfig;

    #[test]
    fn timeout_names_its_bound() {
        let e = poll::<()>(
            "the moon",
            Duration::from_millis(5),
            Duration::from_millis(1),
            || Ok(None),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "timed out after 5 ms waiting for the moon");
    }

    #[test]
    fn rrs_vendor_id_means_retry() {
        let mut d = vec![0u8; 256];
        d[0] = 0x01;
        let cfg = MemConfig::image("t", d);
        let timed_out = |e: Error| {
            assert!(
                matches!(&e, Error::Timeout { what, bound_ms: 5 } if what == "x to answer config reads"),
                "{e:?}"
            );
        };
        timed_out(wait_ready(&cfg, true, Duration::from_millis(5), "x").unwrap_err());
        // Without RRS, 0x0001 is a Vendor ID and COMMAND (0) is not all-ones: ready at once.
        wait_ready(&cfg, false, Duration::from_millis(5), "x").unwrap();
        let all_ones = MemConfig::image("t", vec![0xff; 256]);
        timed_out(wait_ready(&all_ones, false, Duration::from_millis(5), "x").unwrap_err());
    }
}
