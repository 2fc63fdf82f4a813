//! `d3cold`: power the device off and on through runtime PM. The platform must
//! be able to cut its power: ACPI `_PR3` power resources on the device (sysfs
//! `firmware_node/power_resources_D3hot`) or on its parent port.

use super::{Analysis, MethodDef, Verdict};

pub const DEF: MethodDef = MethodDef {
    name: "d3cold",
    summary: "runtime-suspend to D3cold (power removed) and resume",
    probe,
};

pub fn probe(a: &Analysis) -> Verdict {
    let own = a.dev.firmware_node.as_ref().and_then(|f| f.pr3.clone());
    let parent = a
        .bridge()
        .and_then(|b| b.firmware_node.as_ref())
        .and_then(|f| f.pr3.clone());
    let where_ = match (&own, &parent) {
        (Some(p), _) if !p.is_empty() => format!("_PR3 power resources {}", p.join(", ")),
        (_, Some(p)) if !p.is_empty() => {
            format!("the parent port's _PR3 power resources {}", p.join(", "))
        }
        _ => {
            let node = match &a.dev.firmware_node {
                None => "the device has no ACPI firmware node, hence no _PR3 power resources"
                    .to_string(),
                Some(f) => format!(
                    "ACPI node {} has no _PR3 power resources",
                    f.acpi_path.as_deref().unwrap_or("(unnamed)")
                ),
            };
            return Verdict::no(format!(
                "{node} (firmware_node/power_resources_D3hot), nor does its parent port: the platform cannot cut its power"
            ));
        }
    };
    if a.dev.d3cold_allowed == Some(false) {
        return Verdict::yes(format!(
            "{where_}; d3cold_allowed is 0 and will be set for the reset"
        ));
    }
    Verdict::yes(where_)
}
