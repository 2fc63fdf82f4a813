//! Proxmox property strings (`key=value,…`, pve-common `PVE/JSONSchema.pm`).

/// One `key=value` of a property string, with the byte offset of the part in the value.
#[derive(Debug, Clone)]
pub(super) struct Prop<'a> {
    pub(super) key: Option<&'a str>,
    pub(super) value: &'a str,
    pub(super) offset: usize,
}

/// Split a Proxmox property string (pve-common `PVE/JSONSchema.pm` `parse_property_string`):
/// comma-separated parts, blank parts skipped, `key=value` (value non-empty) or a bare value for
/// the format's default key. Errors carry the byte offset of the bad part.
pub(super) fn split_property_string(
    value: &str,
) -> std::result::Result<Vec<Prop<'_>>, (usize, String)> {
    let mut out = Vec::new();
    let mut off = 0;
    for part in value.split(',') {
        let this = off;
        off += part.len() + 1;
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            None => out.push(Prop {
                key: None,
                value: part,
                offset: this,
            }),
            Some((k, v)) => {
                if k.is_empty() {
                    return Err((this, format!("'{part}' has no key before '='")));
                }
                if !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err((this, format!("invalid option name '{k}'")));
                }
                if v.is_empty() {
                    return Err((this, format!("option '{k}' has no value")));
                }
                if out.iter().any(|p: &Prop<'_>| p.key == Some(k)) {
                    return Err((this, format!("duplicate option '{k}'")));
                }
                out.push(Prop {
                    key: Some(k),
                    value: v,
                    offset: this,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_string_errors() {
        for (bad, at, why) in [
            ("a=1,a=2", 4, "duplicate option 'a'"),
            ("a=", 0, "option 'a' has no value"),
            ("=a", 0, "'=a' has no key before '='"),
            ("x, pcie=1", 2, "invalid option name ' pcie'"),
        ] {
            assert_eq!(
                split_property_string(bad).unwrap_err(),
                (at, why.to_string()),
                "{bad}"
            );
        }
        assert_eq!(split_property_string("x,, ,a=b").unwrap().len(), 2);
    }
}
