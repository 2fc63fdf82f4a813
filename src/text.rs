//! Text from outside (a lock holder's line, a state record, a process's
//! command line) printed to a terminal or a log: control characters escaped,
//! so a record cannot rewrite the screen or forge a log line.

/// `s` with every control character escaped as Rust does (`\n`, `\u{1b}`).
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(
            super::escape_control("a\x1b[1mb\nc é"),
            "a\\u{1b}[1mb\\nc é"
        );
    }
}
