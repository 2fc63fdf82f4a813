//! pve-common `PVE/SectionConfig.pm` files (`mapping/pci.cfg`, `storage.cfg`).

use std::path::Path;

use crate::error::Result;

use super::*;

// ---------------------------------------------------------------------------------------------
// SectionConfig (mapping/pci.cfg, storage.cfg)
// ---------------------------------------------------------------------------------------------

/// One section of a pve-common `PVE/SectionConfig.pm` file.
#[derive(Debug, Clone)]
pub(super) struct Section<'a> {
    pub(super) header: &'a str,
    pub(super) line: usize,
    /// (key, value, line); the value is empty when the line has only a key.
    pub(super) props: Vec<(&'a str, &'a str, usize)>,
}

/// Split a SectionConfig file (pve-common `PVE/SectionConfig.pm` `parse_config`): `#` lines
/// (after optional blanks) are comments anywhere; a header line starts in column 1; its
/// properties follow on indented `key value` lines until an empty line. Whitespace-only lines
/// are skipped. A non-indented line inside a section is an error (Proxmox ignores it with a
/// warning, which would silently leave the next section's lines in this one).
pub(super) fn split_sections<'a>(text: &'a str, path: &Path) -> Result<Vec<Section<'a>>> {
    let mut out: Vec<Section<'a>> = Vec::new();
    let mut open = false;
    for (lineno, line) in lines(text) {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.is_empty() {
            open = false;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(|c: char| c.is_whitespace());
        if !open {
            if indented {
                return Err(file_err(
                    path,
                    lineno,
                    1,
                    "indented line outside a section (a section header starts in column 1)",
                ));
            }
            out.push(Section {
                header: line.trim_end(),
                line: lineno,
                props: Vec::new(),
            });
            open = true;
            continue;
        }
        if !indented {
            return Err(file_err(
                path,
                lineno,
                1,
                "expected an indented 'key value' line, or an empty line before the next section",
            ));
        }
        let body = line.trim();
        let (k, v) = match body.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => (body, ""),
        };
        if let Some(sec) = out.last_mut() {
            sec.props.push((k, v, lineno));
        }
    }
    Ok(out)
}
