//! The kernel command line (`/proc/cmdline`), split as `lib/cmdline.c` `next_arg` splits it.

/// `/proc/cmdline`, split as the kernel splits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `(name, value)` in order; names with `-` turned into `_` (kernel `parameq`).
    pub params: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Split like `lib/cmdline.c` `next_arg`: blanks separate, `"…"` groups (the quotes are
    /// dropped), `--` ends the kernel's parameters.
    pub fn parse(text: &str) -> Cmdline {
        let mut params = Vec::new();
        for word in split_quoted(text) {
            if word == "--" {
                break;
            }
            let (k, v) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (word.as_str(), None),
            };
            params.push((k.replace('-', "_"), v));
        }
        Cmdline { params }
    }

    /// Every value of `name` (`-`/`_` alike), in order.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let name = name.replace('-', "_");
        self.params
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The last value of `name` (the kernel's `__setup` handlers run once per occurrence).
    pub fn last(&self, name: &str) -> Option<&str> {
        self.values(name).flatten().last()
    }

    pub fn has(&self, name: &str, value: &str) -> bool {
        self.values(name).any(|v| v == Some(value))
    }
}

/// Blank-separated words with `"` grouping; the quote characters are removed.
pub(super) fn split_quoted(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut any = false;
    for c in text.chars() {
        if c == '"' {
            in_q = !in_q;
            any = true;
        } else if c.is_whitespace() && !in_q {
            if any {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(c);
            any = true;
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_words_and_quotes() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz root=ZFS=rpool/ROOT quiet iommu=pt foo=\"a b\" vfio-pci.ids=1002:1900 -- init-arg=1\n");
        assert_eq!(c.last("iommu"), Some("pt"));
        assert_eq!(c.last("foo"), Some("a b"));
        assert_eq!(c.last("vfio_pci.ids"), Some("1002:1900"));
        assert!(c.values("quiet").any(|v| v.is_none()));
        assert_eq!(c.last("init_arg"), None);
    }
}
