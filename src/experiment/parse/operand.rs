//! Operands of a step: names, numbers, durations, config locations and widths, and the
//! "did you mean" suggestions for unknown words.

use crate::experiment::cfgnames;

use super::lexer::{Tok, Token};
use super::stmt::{perr, PResult};
use super::{CapKind, CfgLoc, CfgRef, Width, KEYWORDS, MAX_DURATION_US};

/// A cursor over one line's operand tokens.
pub(super) struct Cur<'a, 't> {
    pub(super) toks: &'t [Token<'a>],
    pub(super) i: usize,
    pub(super) end_col: usize,
}

impl<'a> Cur<'a, '_> {
    pub(super) fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.i).copied()
    }

    pub(super) fn peek_word(&self) -> Option<(&'a str, usize)> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w),
                col,
            }) => Some((w, col)),
            _ => None,
        }
    }

    pub(super) fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    /// The next token, which must be a word.
    pub(super) fn word(&mut self, what: &str) -> PResult<(&'a str, usize)> {
        match self.next() {
            Some(Token {
                tok: Tok::Word(w),
                col,
            }) => Ok((w, col)),
            Some(t) => perr(t.col, format!("expected {what}, found '{}'", t.show())),
            None => perr(self.end_col, format!("expected {what}")),
        }
    }

    /// Nothing may follow.
    pub(super) fn finish(&self, after: &str) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => perr(t.col, format!("unexpected '{}' after {after}", t.show())),
        }
    }
}

pub(super) fn is_ident(w: &str) -> bool {
    let mut chars = w.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn name(cur: &mut Cur<'_, '_>, what: &str) -> PResult<String> {
    let (w, col) = cur.word(what)?;
    if !w
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return perr(
            col,
            format!("expected {what} (letters, digits, '_', '-', '.'), found '{w}'"),
        );
    }
    Ok(w.to_string())
}

pub(super) fn bit_number(s: &str, col: usize) -> PResult<u8> {
    match parse_number(s) {
        Ok(n) if n < 64 => Ok(n as u8),
        Ok(n) => perr(col, format!("bit {n} is past bit 63")),
        Err(why) => perr(col, format!("expected a bit number, found '{s}' ({why})")),
    }
}

/// `0x..` hex, `0b..` binary or decimal, `_` allowed between digits.
pub fn parse_number(s: &str) -> std::result::Result<u64, String> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (b, 2)
    } else {
        (s, 10)
    };
    if digits.is_empty() || digits.starts_with('_') {
        return Err("no digits".into());
    }
    let mut n: u64 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let Some(d) = c.to_digit(radix) else {
            return Err(format!("'{c}' is not a base-{radix} digit"));
        };
        n = n
            .checked_mul(u64::from(radix))
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or_else(|| "too large for 64 bits".to_string())?;
    }
    Ok(n)
}

/// A duration like `100ms`: a whole number (`_` allowed) and a unit `us`, `ms` or `s`; in
/// microseconds, at most [`MAX_DURATION_US`].
pub fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale: u64 = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "" => return Err("a unit (us, ms, s) is needed".into()),
        _ => return Err(format!("unknown unit '{unit}' (use us, ms or s)")),
    };
    if num.is_empty() || num.starts_with('_') {
        return Err("no digits".into());
    }
    let n = parse_number(num)?;
    match n.checked_mul(scale) {
        Some(us) if us <= MAX_DURATION_US => Ok(us),
        _ => Err(format!(
            "longer than the limit of {}s",
            MAX_DURATION_US / 1_000_000
        )),
    }
}

pub(super) fn duration(cur: &mut Cur<'_, '_>, what: &str) -> PResult<u64> {
    let (w, col) = cur.word(&format!("{what} like 100ms"))?;
    if !w.starts_with(|c: char| c.is_ascii_digit()) {
        return perr(col, format!("expected {what} like 100ms, found '{w}'"));
    }
    parse_duration(w).or_else(|why| {
        perr(
            col,
            format!("expected {what} like 100ms, found '{w}' ({why})"),
        )
    })
}

/// A config offset: prefixed numbers as usual, but a bare decimal of two or more digits is
/// refused, because setpci reads `CAP_EXP+10` as hex and a copied command must not silently
/// change meaning.
fn cfg_number(s: &str) -> std::result::Result<u64, String> {
    let prefixed = s.len() > 1 && matches!(s.get(..2), Some("0x" | "0X" | "0b" | "0B"));
    let n = parse_number(s)?;
    if !prefixed && n >= 10 {
        return Err(format!(
            "ambiguous: setpci reads config offsets as hex; write {n:#x} for decimal {n}, or 0x{s} for hex"
        ));
    }
    Ok(n)
}

fn width_word(w: &str) -> Option<Width> {
    match w.to_ascii_lowercase().as_str() {
        "b" | "8" => Some(Width::B),
        "w" | "16" => Some(Width::W),
        "l" | "32" => Some(Width::L),
        _ => None,
    }
}

/// `BASE[+OFF][.b|.w|.l]` with an optional separate WIDTH word. For `cfg-write` the WIDTH word is
/// recognised only when two operands follow it (WIDTH VALUE), so `cfg-write COMMAND 0x406` reads
/// 0x406 as the value.
pub(super) fn cfg_loc(cur: &mut Cur<'_, '_>, write: bool) -> PResult<CfgLoc> {
    let (w, col) = cur.word("a config register like 0x04, COMMAND or CAP_EXP+8.w")?;
    let remaining = cur.toks.len().saturating_sub(cur.i);
    let width_arg_present = if write {
        remaining >= 2
    } else {
        remaining >= 1
    };
    let width_arg = if width_arg_present {
        let (ww, wcol) = cur.word("a width")?;
        match width_word(ww) {
            Some(wd) => Some((wd, wcol)),
            None => {
                return perr(
                    wcol,
                    format!("expected a width (b, w, l or 8, 16, 32), found '{ww}'"),
                )
            }
        }
    } else {
        None
    };

    // Split off a `.b/.w/.l` suffix.
    let (body, suffix) = match w.rsplit_once('.') {
        Some((b, s)) => match width_word(s) {
            Some(wd) if s.len() == 1 => (b, Some(wd)),
            _ => {
                return perr(
                    col,
                    format!("invalid width suffix '.{s}' in '{w}' (use .b, .w or .l)"),
                )
            }
        },
        None => (w, None),
    };
    let (base, plus) = match body.split_once('+') {
        Some((b, p)) => match cfg_number(p) {
            Ok(n) if n < 0x1000 => (b, n as u16),
            Ok(n) => {
                return perr(
                    col,
                    format!("offset {n:#x} in '{w}' is past the 4 KiB config space"),
                )
            }
            Err(why) => return perr(col, format!("invalid offset '{p}' in '{w}': {why}")),
        },
        None => (body, 0),
    };
    if base.is_empty() {
        return perr(
            col,
            format!("expected a config register before '+' in '{w}'"),
        );
    }

    let mut implied = None;
    let mut name = None;
    let reg = if base.starts_with(|c: char| c.is_ascii_digit()) {
        match cfg_number(base) {
            Ok(n) if n < 0x1000 => CfgRef::Offset(n as u16),
            Ok(n) => return perr(col, format!("offset {n:#x} is past the 4 KiB config space")),
            Err(why) => return perr(col, format!("invalid config offset '{base}': {why}")),
        }
    } else if let Some(&(n, off, wd)) = cfgnames::HEADER
        .iter()
        .find(|h| h.0.eq_ignore_ascii_case(base))
    {
        implied = Width::from_bytes(wd);
        name = Some(n.to_string());
        CfgRef::Offset(off)
    } else if let Some(&(n, id)) = cfgnames::CAPS
        .iter()
        .find(|c| c.0.eq_ignore_ascii_case(base))
    {
        CfgRef::Cap {
            name: n.to_string(),
            kind: CapKind::Std,
            id,
            plus: 0,
        }
    } else if let Some(&(n, id)) = cfgnames::ECAPS
        .iter()
        .find(|c| c.0.eq_ignore_ascii_case(base))
    {
        CfgRef::Cap {
            name: n.to_string(),
            kind: CapKind::Ext,
            id,
            plus: 0,
        }
    } else {
        let hint = nearest(base, cfgnames::all_names())
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default();
        return perr(col, format!("unknown config register '{base}'{hint}"));
    };
    let reg = match reg {
        CfgRef::Offset(o) => {
            let sum = u32::from(o) + u32::from(plus);
            CfgRef::Offset(sum.min(0xffff) as u16)
        }
        CfgRef::Cap { name, kind, id, .. } => CfgRef::Cap {
            name,
            kind,
            id,
            plus,
        },
    };

    let width = match (suffix, width_arg) {
        (Some(_), Some((_, wcol))) => {
            return perr(wcol, "width given twice: as a suffix and as an argument")
        }
        (Some(wd), None) | (None, Some((wd, _))) => wd,
        (None, None) => match implied {
            Some(wd) => wd,
            None => {
                return perr(
                    col,
                    format!("'{w}' needs a width: add .b, .w or .l (CAP_EXP+8.w) or a WIDTH argument (b, w, l)"),
                )
            }
        },
    };
    let b = u32::from(width.bytes());
    let (off, what) = match &reg {
        CfgRef::Offset(o) => (u32::from(*o), "offset"),
        CfgRef::Cap { plus, .. } => (u32::from(*plus), "offset into the capability"),
    };
    if off % b != 0 {
        return perr(
            col,
            format!("{what} {off:#x} is not aligned to the {b}-byte width"),
        );
    }
    if off + b > 0x1000 {
        return perr(
            col,
            format!("{what} {off:#x} width {b} is past the 4 KiB config space"),
        );
    }
    Ok(CfgLoc { reg, width, name })
}

pub(super) fn unknown_keyword(kw: &str) -> String {
    match nearest(kw, KEYWORDS.iter().copied()) {
        Some(k) => format!("unknown step '{kw}' (did you mean '{k}'?)"),
        None => format!("unknown step '{kw}'; steps are: {}", KEYWORDS.join(", ")),
    }
}

/// The closest candidate (case-insensitive edit distance), if close enough to be a likely typo.
pub(crate) fn nearest<'c>(
    word: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let w = word.to_ascii_lowercase();
    let limit = (w.chars().count() / 2).clamp(1, 3);
    candidates
        .map(|c| (levenshtein(&w, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
