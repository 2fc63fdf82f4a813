//! The device model's profile: which reset methods clean the GPU's reset-bug
//! state, and which faults to inject. TOML, every key optional; the default
//! follows the seed: remove+rescan around a stop works, FLR/PM/bus do not
//! clean the GPU, SMU mode 2 does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Faults the model can inject.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// The SMU never answers (response stays 0).
    NoAnswer,
    /// The SMU answers 0xFC (busy with other work).
    Busy,
    /// The SMU answers 0xFD (prerequisites not met).
    Prerequisites,
    /// The register BAR reads all-ones (device dead or powered off).
    BarDead,
    /// The device vanishes mid-reset and does not come back on rescan.
    Vanish,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Effective {
    pub kernel: bool,
    pub flr: bool,
    pub af_flr: bool,
    pub pm: bool,
    pub bus: bool,
    pub d3cold: bool,
    pub remove_rescan: bool,
    pub smu_mode2: bool,
}

impl Default for Effective {
    fn default() -> Self {
        Effective {
            kernel: false,
            flr: false,
            af_flr: false,
            pm: false,
            bus: false,
            d3cold: false,
            remove_rescan: true,
            smu_mode2: true,
        }
    }
}

impl Effective {
    pub fn cleans(&self, method: &str) -> bool {
        match method {
            "kernel" => self.kernel,
            "flr" => self.flr,
            "af_flr" => self.af_flr,
            "pm" => self.pm,
            "bus" => self.bus,
            "d3cold" => self.d3cold,
            "remove_rescan" => self.remove_rescan,
            "smu_mode2" => self.smu_mode2,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SmuProfile {
    /// How long mode 2 takes: the response register reads 0 meanwhile.
    pub mode2_ms: u64,
    /// Any other message's answer delay.
    pub answer_us: u64,
    /// PMFW version returned by GetPmfwVersion (program<<24|major<<16|minor<<8|debug).
    pub pmfw_version: u32,
    /// Driver interface version returned by GetDriverIfVersion.
    pub driver_if_version: u32,
    /// GetEnabledSmuFeatures: low and high 32 bits.
    pub features: u64,
    pub fault: Fault,
    /// How many messages the fault hits (0 = every one).
    pub fault_count: u32,
}

impl Default for SmuProfile {
    fn default() -> Self {
        SmuProfile {
            mode2_ms: 30,
            answer_us: 50,
            pmfw_version: 0x004c_5000,
            driver_if_version: 0x0000_0007,
            features: 0x0000_0003_1fff_fdff,
            fault: Fault::None,
            fault_count: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Methods that return a dirty GPU to clean.
    pub effective: Effective,
    pub smu: SmuProfile,
    /// A fault of the device itself (not the SMU): `vanish`.
    pub device_fault: Fault,
    /// Delay before a removed device reappears on rescan, in ms.
    pub rescan_ms: u64,
}

impl Profile {
    pub fn parse(path: &Path, text: &str) -> Result<Profile> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before
                        .rsplit('\n')
                        .next()
                        .map(|l| l.chars().count())
                        .unwrap_or(0)
                        + 1;
                    (line, col)
                })
                .unwrap_or((0, 0));
            Error::FileParse {
                path: path.to_path_buf(),
                line,
                column,
                reason: e.message().to_string(),
            }
        })
    }

    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::parse(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let p = Profile::default();
        assert!(p.effective.cleans("remove_rescan"));
        assert!(p.effective.cleans("smu_mode2"));
        assert!(
            !p.effective.cleans("flr") && !p.effective.cleans("pm") && !p.effective.cleans("bus")
        );
    }

    #[test]
    fn parses_and_rejects_with_position() {
        let p = Profile::parse(
            Path::new("p.toml"),
            "[smu]\nfault = \"busy\"\nfault_count = 2\n",
        )
        .unwrap();
        assert_eq!(p.smu.fault, Fault::Busy);
        let e = Profile::parse(Path::new("p.toml"), "[smu]\nfalut = 1\n").unwrap_err();
        assert!(e.to_string().starts_with("p.toml:2:1:"), "{e}");
    }
}
