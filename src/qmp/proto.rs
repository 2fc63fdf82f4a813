//! QMP messages on the wire: one JSON object per line (QEMU ends each with `\r\n`).
//!
//! The kinds, from QEMU's `docs/interop/qmp-spec.rst` (§2.2–2.5): the greeting
//! `{"QMP": {"version": …, "capabilities": […]}}`, a success `{"return": …, "id": …}`, an error
//! `{"error": {"class": …, "desc": …}, "id": …}` and an asynchronous event
//! `{"event": NAME, "data": {…}, "timestamp": {"seconds": …, "microseconds": …}}`.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::QmpError;

/// The longest line accepted from the monitor. QEMU 7.2's largest answer, `query-qmp-schema`, is
/// about 200 KB; a line longer than this is not a monitor talking.
pub const MAX_LINE: usize = 8 << 20;

/// How much of a bad line an error quotes.
const EXCERPT: usize = 80;

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Greeting {
        /// `major.minor.micro` from `QMP.version.qemu`, when present.
        version: Option<String>,
        capabilities: Vec<String>,
    },
    Return {
        id: Option<Value>,
        value: Value,
    },
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    Event(Event),
}

/// An asynchronous event, with the moment it was read off the socket.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Event {
    pub name: String,
    pub data: Value,
    /// QEMU's own timestamp (seconds since the epoch), when present.
    pub timestamp: Option<f64>,
    /// When resetlab read it (monotonic): what a wait measures against.
    #[serde(skip)]
    pub received: Instant,
}

impl Event {
    /// Whether this is `DEVICE_DELETED` for the device `id` (its qdev id, or its QOM path for a
    /// device without one: QEMU sends `data.device` only when the device has an id).
    pub fn is_device_deleted(&self, id: &str) -> bool {
        if self.name != "DEVICE_DELETED" {
            return false;
        }
        let dev = self.data.get("device").and_then(Value::as_str);
        let path = self.data.get("path").and_then(Value::as_str);
        dev == Some(id) || path == Some(id) || path == Some(&format!("/machine/peripheral/{id}"))
    }
}

/// The start of `bytes` as printable text, for an error line.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text
        .chars()
        .take(EXCERPT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT {
        s.push('…');
    }
    s.trim().to_string()
}

/// Parses one line (without its `\n`; a trailing `\r` is allowed).
pub fn parse_line(line: &[u8]) -> Result<Message, QmpError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let malformed = |reason: String| QmpError::Malformed {
        reason,
        excerpt: excerpt(line),
    };
    if line.len() > MAX_LINE {
        return Err(QmpError::TooLong { limit: MAX_LINE });
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Value::Object(mut o) = v else {
        return Err(malformed("not a JSON object".into()));
    };
    if let Some(g) = o.get("QMP") {
        let version = g.pointer("/version/qemu").and_then(|q| {
            let n = |k: &str| q.get(k).and_then(Value::as_u64);
            Some(format!("{}.{}.{}", n("major")?, n("minor")?, n("micro")?))
        });
        let capabilities = g
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Message::Greeting {
            version,
            capabilities,
        });
    }
    let id = o.remove("id");
    if let Some(value) = o.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(e) = o.remove("error") {
        let field = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(class), Some(desc)) = (field("class"), field("desc")) else {
            return Err(malformed("an error without class and desc".into()));
        };
        return Ok(Message::Error { id, class, desc });
    }
    if let Some(name) = o.get("event") {
        let Some(name) = name.as_str() else {
            return Err(malformed("an event whose name is not a string".into()));
        };
        let timestamp = o.get("timestamp").and_then(|t| {
            let s = t.get("seconds")?.as_f64()?;
            let us = t.get("microseconds")?.as_f64()?;
            Some(s + us / 1e6)
        });
        return Ok(Message::Event(Event {
            name: name.to_string(),
            data: o.remove("data").unwrap_or(Value::Null),
            timestamp,
            received: Instant::now(),
        }));
    }
    Err(malformed(
        "neither a greeting, a return, an error nor an event".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_four_kinds() {
        let g = br#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(
            parse_line(g).unwrap(),
            Message::Greeting {
                version: Some("7.2.22".into()),
                capabilities: vec!["oob".into()]
            }
        );
        assert_eq!(
            parse_line(b"{\"return\": {}, \"id\": 3}\r").unwrap(),
            Message::Return {
                id: Some(3.into()),
                value: serde_json::json!({})
            }
        );
        let e =
            br#"{"id": 1, "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}"#;
        assert!(matches!(parse_line(e).unwrap(),
            Message::Error { class, desc, .. } if class == "DeviceNotFound" && desc.contains("'x'")));
        let ev = br#"{"timestamp": {"seconds": 1700000000, "microseconds": 500000}, "event": "DEVICE_DELETED", "data": {"device": "hostpci0", "path": "/machine/peripheral/hostpci0"}}"#;
        let Message::Event(ev) = parse_line(ev).unwrap() else {
            panic!("not an event")
        };
        assert!(ev.is_device_deleted("hostpci0"));
        assert!(!ev.is_device_deleted("hostpci1"));
        assert_eq!(ev.timestamp, Some(1_700_000_000.5));
    }

    #[test]
    fn an_anonymous_device_is_matched_by_its_path() {
        let ev = br#"{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral-anon/device[2]"}}"#;
        let Message::Event(ev) = parse_line(ev).unwrap() else {
            panic!("not an event")
        };
        assert!(ev.is_device_deleted("/machine/peripheral-anon/device[2]"));
    }

    #[test]
    fn bad_lines_say_what_they_are() {
        for (line, want) in [
            (&b"QEMU 7.2.22 monitor - type 'help'"[..], "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (b"{\"error\": {\"class\": 1}}", "without class and desc"),
            (b"{\"event\": 5}", "not a string"),
            (b"{\"hello\": 1}", "neither"),
        ] {
            let e = parse_line(line).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let _ = parse_line(v.to_string().as_bytes());
        }

        #[test]
        fn excerpts_are_one_short_line(line in proptest::collection::vec(any::<u8>(), 0..500)) {
            let e = excerpt(&line);
            prop_assert!(!e.contains('\n'));
            prop_assert!(e.chars().count() <= EXCERPT + 1);
        }
    }

    /// JSON values shaped like QMP messages: the keys QMP uses, any values beneath.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| n.into()),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            "[a-zA-Z_ ]{0,12}".prop_map(Value::String),
        ];
        let key = prop_oneof![
            Just("QMP".to_string()),
            Just("return".to_string()),
            Just("error".to_string()),
            Just("event".to_string()),
            Just("data".to_string()),
            Just("id".to_string()),
            Just("class".to_string()),
            Just("desc".to_string()),
            Just("timestamp".to_string()),
            Just("seconds".to_string()),
            Just("microseconds".to_string()),
            Just("version".to_string()),
            Just("qemu".to_string()),
            Just("major".to_string()),
            Just("capabilities".to_string()),
            "[a-z]{1,6}",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
