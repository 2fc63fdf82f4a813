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

/// The unit a duration without one is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareUnit {
    Millis,
    Secs,
}

/// A duration as a person writes one: `500ms`, `2s`, `1.5s`, `2m`, or a bare
/// number in `bare`'s unit (the flag's or key's own: `--lock-timeout 500`,
/// `release_timeout_s = 15`). At most 24 hours; never negative or NaN.
pub fn parse_duration(s: &str, bare: BareUnit) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("'{s}' is not a duration (like 500ms, 2s or 1.5s)"));
    }
    let scale = match (unit.trim(), bare) {
        ("", BareUnit::Millis) | ("ms", _) => 1e-3,
        ("", BareUnit::Secs) | ("s", _) => 1.0,
        ("m" | "min", _) => 60.0,
        (u, _) => return Err(format!("'{s}': unknown unit '{u}' (use ms, s or m)")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (like 500ms, 2s or 1.5s)"))?;
    let secs = v * scale;
    if !(secs.is_finite() && secs <= 86_400.0) {
        return Err(format!("'{s}' is longer than 24 hours"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_take_units_and_bare_numbers_in_the_callers_unit() {
        let ms = |s| parse_duration(s, BareUnit::Millis);
        assert_eq!(ms("500"), Ok(Duration::from_millis(500)));
        assert_eq!(ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(ms("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(ms("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(ms("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("15", BareUnit::Secs),
            Ok(Duration::from_secs(15))
        );
        assert_eq!(
            ms("5h"),
            Err("'5h': unknown unit 'h' (use ms, s or m)".into())
        );
        assert_eq!(
            ms("-1s"),
            Err("'-1s' is not a duration (like 500ms, 2s or 1.5s)".into())
        );
        assert_eq!(
            ms("s"),
            Err("'s' is not a duration (like 500ms, 2s or 1.5s)".into())
        );
        assert_eq!(
            ms("25h"),
            Err("'25h': unknown unit 'h' (use ms, s or m)".into())
        );
        assert_eq!(ms("1441m"), Err("'1441m' is longer than 24 hours".into()));
    }

    proptest::proptest! {
        #[test]
        fn parse_duration_never_panics(s in ".{0,24}") {
            let _ = parse_duration(&s, BareUnit::Millis);
            let _ = parse_duration(&s, BareUnit::Secs);
        }
    }

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_control("a\x1b[1mb\nc é"), "a\\u{1b}[1mb\\nc é");
    }
}
