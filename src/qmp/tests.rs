//! The client against an in-process fake monitor: a `UnixListener` in a temp dir served by a
//! thread that plays a script.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::*;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": ["oob"]}}"#;

/// What the fake does in answer to a request.
enum Act {
    /// A line, `\r\n` added.
    Line(String),
    /// Raw bytes, nothing added.
    Raw(Vec<u8>),
    /// A pause (the guest taking its time).
    Wait(Duration),
    /// Close the connection.
    Close,
}

use Act::*;

fn reply(req: &Value, ret: Value) -> Act {
    Line(json!({"return": ret, "id": req["id"]}).to_string())
}

fn error(req: &Value, class: &str, desc: &str) -> Act {
    Line(json!({"error": {"class": class, "desc": desc}, "id": req["id"]}).to_string())
}

fn deleted(id: &str) -> Act {
    Line(
        json!({"event": "DEVICE_DELETED", "data": {"device": id, "path": format!("/machine/peripheral/{id}")},
               "timestamp": {"seconds": 1, "microseconds": 2}})
        .to_string(),
    )
}

struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    /// Serves one connection: sends `hello` (raw), then answers each request line with `answer`.
    fn start(hello: Vec<Act>, mut answer: impl FnMut(&Value) -> Vec<Act> + Send + 'static) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.qmp");
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let thread = std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            if !play(&mut s, hello) {
                return;
            }
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let req: Value = serde_json::from_str(&line).unwrap();
                line.clear();
                seen.lock().unwrap().push(req.clone());
                if !play(&mut s, answer(&req)) {
                    return;
                }
            }
        });
        Fake {
            _dir: dir,
            path,
            requests,
            thread: Some(thread),
        }
    }

    /// A fake QEMU: greeting, `qmp_capabilities`, then `answer` for the rest.
    fn qemu(mut answer: impl FnMut(&Value) -> Vec<Act> + Send + 'static) -> Fake {
        Fake::start(vec![Line(GREETING.into())], move |req| {
            if req["execute"] == "qmp_capabilities" {
                vec![reply(req, json!({}))]
            } else {
                answer(req)
            }
        })
    }

    fn commands(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r["execute"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // The thread ends when the client's end closes (read gives 0) or accept fails; a test
        // that never connected leaves it in accept: wake it with a connection of our own.
        if let Some(t) = self.thread.take() {
            if !t.is_finished() {
                let _ = UnixStream::connect(&self.path);
            }
            let _ = t.join();
        }
    }
}

/// Plays the acts; false once the connection is closed.
fn play(s: &mut UnixStream, acts: Vec<Act>) -> bool {
    for a in acts {
        let ok = match a {
            Line(l) => s.write_all(format!("{l}\r\n").as_bytes()).is_ok(),
            Raw(b) => s.write_all(&b).is_ok(),
            Wait(d) => {
                std::thread::sleep(d);
                true
            }
            Close => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                false
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

const B: Duration = Duration::from_secs(5);

fn qmp_err(e: Error) -> QmpError {
    match e {
        Error::Qmp { source, .. } => source,
        other => panic!("not a QMP error: {other}"),
    }
}

#[test]
fn connects_negotiates_and_runs_a_query() {
    let fake = Fake::qemu(|req| vec![reply(req, json!({"status": "running", "running": true}))]);
    let mut c = Client::connect(&fake.path, B).unwrap();
    assert_eq!(c.version.as_deref(), Some("7.2.22"));
    assert_eq!(c.status(B).unwrap(), "running");
    drop(c);
    assert_eq!(fake.commands(), ["qmp_capabilities", "query-status"]);
}

#[test]
fn greetings_that_are_not_qemu() {
    let hmp = Fake::start(
        vec![Raw(
            b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ".to_vec(),
        )],
        |_| vec![],
    );
    let e = Client::connect(&hmp.path, B).unwrap_err();
    let line = e.one_line();
    assert!(line.contains("not a QEMU monitor socket"), "{line}");
    assert!(line.contains("HMP"), "{line}");
    assert_eq!(e.exit_code(), crate::error::exit::USAGE);

    let wrong = Fake::start(vec![Line(r#"{"return": {}}"#.into())], |_| vec![]);
    let e = qmp_err(Client::connect(&wrong.path, B).unwrap_err());
    assert!(matches!(e, QmpError::NotQmp { .. }), "{e}");

    let closes = Fake::start(vec![Close], |_| vec![]);
    let e = qmp_err(Client::connect(&closes.path, B).unwrap_err());
    assert!(e.to_string().contains("without a QMP greeting"), "{e}");

    let garbage = Fake::start(vec![Raw(vec![0xff, 0x00, 0x17, b'\n'])], |_| vec![]);
    let e = qmp_err(Client::connect(&garbage.path, B).unwrap_err());
    assert!(matches!(e, QmpError::NotQmp { .. }), "{e}");
}

#[test]
fn a_silent_socket_times_out_with_the_bound_in_the_error() {
    let silent = Fake::start(vec![], |_| vec![]);
    let e = Client::connect(&silent.path, Duration::from_millis(200)).unwrap_err();
    let line = e.one_line();
    assert!(line.contains("timed out after 200 ms"), "{line}");
    assert!(line.contains("greeting"), "{line}");
    assert_eq!(e.exit_code(), crate::error::exit::TIMEOUT);
}

#[test]
fn a_server_that_never_answers_a_command_is_a_bounded_error() {
    let fake = Fake::qemu(|_| vec![]);
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = c
        .execute("query-status", Value::Null, Duration::from_millis(150))
        .unwrap_err();
    assert!(
        e.one_line()
            .contains("timed out after 150 ms waiting for the reply to query-status"),
        "{}",
        e.one_line()
    );
}

#[test]
fn not_a_socket_and_nobody_listening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = Client::connect(&file, B).unwrap_err();
    assert!(e.one_line().contains("not a socket"), "{}", e.one_line());
    let stale = dir.path().join("stale.qmp");
    drop(UnixListener::bind(&stale).unwrap());
    let e = Client::connect(&stale, B).unwrap_err();
    assert!(e.one_line().contains("nothing listens"), "{}", e.one_line());
    let e = Client::connect(&dir.path().join("none"), B).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn an_error_reply_is_one_line_with_class_and_desc() {
    let fake = Fake::qemu(|req| {
        vec![error(
            req,
            "GenericError",
            "Bus 'pcie.0' does not support hotplugging",
        )]
    });
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = c.execute("query-pci", Value::Null, B).unwrap_err();
    assert_eq!(
        e.one_line(),
        format!(
            "QMP {}: QEMU refused query-pci: GenericError: Bus 'pcie.0' does not support hotplugging",
            fake.path.display()
        )
    );
}

#[test]
fn events_before_the_reply_are_queued() {
    let fake = Fake::qemu(|req| {
        vec![
            Line(r#"{"event": "RTC_CHANGE", "data": {"offset": 1}}"#.into()),
            deleted("x"),
            reply(req, json!({"status": "running"})),
        ]
    });
    let mut c = Client::connect(&fake.path, B).unwrap();
    assert_eq!(c.status(B).unwrap(), "running");
    let ev = c.take_events();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].name, "RTC_CHANGE");
    assert!(ev[1].is_device_deleted("x"));
}

#[test]
fn closed_mid_reply_and_garbage_replies() {
    let fake = Fake::qemu(|_| vec![Raw(br#"{"return": {"sta"#.to_vec()), Close]);
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = qmp_err(c.execute("query-status", Value::Null, B).unwrap_err());
    assert!(matches!(e, QmpError::Closed { .. }), "{e}");
    // Once closed, it says so at once.
    let e = qmp_err(c.execute("query-status", Value::Null, B).unwrap_err());
    assert!(matches!(e, QmpError::Closed { .. }), "{e}");

    let fake = Fake::qemu(|_| vec![Line("{\"return\": [1, 2".into())]);
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = qmp_err(c.execute("query-status", Value::Null, B).unwrap_err());
    assert!(matches!(e, QmpError::Malformed { .. }), "{e}");

    let fake = Fake::qemu(|_| vec![Line(r#"{"return": {}, "id": "someone else"}"#.into())]);
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = qmp_err(c.execute("query-status", Value::Null, B).unwrap_err());
    assert!(matches!(e, QmpError::Unexpected { .. }), "{e}");
}

#[test]
fn an_endless_line_is_cut_off() {
    let fake = Fake::qemu(|_| {
        let chunk = vec![b'x'; 1 << 20];
        (0..10).map(|_| Raw(chunk.clone())).collect()
    });
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = qmp_err(
        c.execute("query-status", Value::Null, Duration::from_secs(30))
            .unwrap_err(),
    );
    assert!(matches!(e, QmpError::TooLong { .. }), "{e}");
}

#[test]
fn a_late_reply_to_a_timed_out_call_is_skipped() {
    let mut n = 0;
    let fake = Fake::qemu(move |req| {
        n += 1;
        if n == 1 {
            vec![] // answered only with the next one
        } else {
            vec![
                Line(json!({"return": {"status": "stale"}, "id": 2}).to_string()),
                reply(req, json!({"status": "paused"})),
            ]
        }
    });
    let mut c = Client::connect(&fake.path, B).unwrap();
    // The stale reply (another id) is no answer: the call ends at its bound.
    assert!(matches!(
        c.status(Duration::from_millis(100)),
        Err(crate::Error::Qmp {
            source: QmpError::Timeout { .. },
            ..
        })
    ));
    assert_eq!(c.status(B).unwrap(), "paused");
}

#[test]
fn commands_that_change_the_vm_need_the_journal() {
    let fake = Fake::qemu(|req| vec![reply(req, json!({}))]);
    let mut c = Client::connect(&fake.path, B).unwrap();
    let e = c.execute("stop", Value::Null, B).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::REFUSED);
    let mut dry = Journal::new(true);
    assert_eq!(
        c.execute_recorded(&mut dry, None, "stop", Value::Null, B)
            .unwrap(),
        None
    );
    let mut j = Journal::new(false);
    assert_eq!(
        c.execute_recorded(&mut j, None, "stop", Value::Null, B)
            .unwrap(),
        Some(json!({}))
    );
    drop(c);
    assert_eq!(fake.commands(), ["qmp_capabilities", "stop"]);
    assert_eq!(dry.writes().count(), 1);
    assert_eq!(j.writes().count(), 1);
}

/// A fake VM like the seed's VM 100: hostpci0 (GPU) and hostpci1 (audio) on their own root
/// ports, hostpci2.0/.1 a multi-function entry, an e1000e without vfio.
struct Vm {
    /// How long the guest takes to eject each device; `None`: never (paused).
    eject: Vec<(&'static str, Option<Duration>)>,
    status: &'static str,
}

fn vm_answer(vm: Vm) -> impl FnMut(&Value) -> Vec<Act> + Send + 'static {
    let host = |id: &str| match id {
        "hostpci0" => Some("0000:c5:00.0"),
        "hostpci1" => Some("0000:c5:00.1"),
        "hostpci2.0" => Some("0000:c6:00.0"),
        "hostpci2.1" => Some("0000:c6:00.1"),
        "mdev0" => Some("ffff:ff:ff.f"),
        _ => None,
    };
    let slots: Vec<(&str, Vec<&str>)> = vec![
        ("hostpci0", vec!["hostpci0"]),
        ("hostpci1", vec!["hostpci1"]),
        ("hostpci2.0", vec!["hostpci2.0", "hostpci2.1"]),
    ];
    move |req| {
        let args = &req["arguments"];
        match req["execute"].as_str().unwrap() {
            "qom-list" if args["path"] == "/machine/peripheral" => vec![reply(
                req,
                json!([
                    {"name": "type", "type": "string"},
                    {"name": "hostpci0", "type": "child<vfio-pci>"},
                    {"name": "hostpci1", "type": "child<vfio-pci>"},
                    {"name": "hostpci2.0", "type": "child<vfio-pci>"},
                    {"name": "hostpci2.1", "type": "child<vfio-pci>"},
                    {"name": "mdev0", "type": "child<vfio-pci>"},
                    {"name": "net0", "type": "child<e1000e>"},
                    {"name": "rp0", "type": "child<pcie-root-port>"},
                ]),
            )],
            "qom-list" => vec![error(
                req,
                "DeviceNotFound",
                "Device '/machine/peripheral-anon' not found",
            )],
            "qom-get" => {
                let id = args["path"].as_str().unwrap().rsplit('/').next().unwrap();
                match host(id) {
                    Some(h) => vec![reply(req, json!(h))],
                    None => vec![error(req, "GenericError", "Property '.host' not found")],
                }
            }
            "query-pci" => {
                let dev = |slot: u64, function: u64, id: &str| json!({"bus": 1, "slot": slot, "function": function, "qdev_id": id});
                let port = |slot: u64, kids: Vec<Value>| {
                    json!({"bus": 0, "slot": slot, "function": 0, "qdev_id": format!("rp{slot}"),
                           "pci_bridge": {"bus": {"number": 0, "secondary": 0, "subordinate": 0}, "devices": kids}})
                };
                vec![reply(
                    req,
                    json!([{"bus": 0, "devices": [
                        {"bus": 0, "slot": 0, "function": 0, "qdev_id": ""},
                        port(1, vec![dev(0, 0, "hostpci0")]),
                        port(2, vec![dev(0, 0, "hostpci1")]),
                        port(3, vec![dev(0, 0, "hostpci2.0"), dev(0, 1, "hostpci2.1")]),
                        port(4, vec![dev(0, 0, "net0")]),
                    ]}]),
                )]
            }
            "query-status" => vec![reply(
                req,
                json!({"status": vm.status, "running": vm.status == "running"}),
            )],
            "device_del" => {
                let id = args["id"].as_str().unwrap();
                if id == "net0" {
                    return vec![error(
                        req,
                        "GenericError",
                        "Bus 'pcie.0' does not support hotplugging",
                    )];
                }
                let Some((_, fns)) = slots
                    .iter()
                    .find(|(f0, fns)| *f0 == id || fns.contains(&id))
                else {
                    return vec![error(
                        req,
                        "DeviceNotFound",
                        &format!("Device '{id}' not found"),
                    )];
                };
                let mut acts = vec![reply(req, json!({}))];
                for f in fns {
                    if let Some((_, Some(d))) = vm.eject.iter().find(|(e, _)| e == f) {
                        acts.push(Wait(*d));
                        acts.push(deleted(f));
                    }
                }
                acts
            }
            other => vec![error(
                req,
                "CommandNotFound",
                &format!("The command {other} has not been found"),
            )],
        }
    }
}

#[test]
fn finds_the_device_that_passes_a_function_through() {
    let fake = Fake::qemu(vm_answer(Vm {
        eject: vec![],
        status: "running",
    }));
    let mut c = Client::connect(&fake.path, B).unwrap();
    let p = c.passthrough_devices(B).unwrap();
    assert_eq!(p.len(), 5);
    // A sysfsdev= device has no host BDF.
    assert_eq!(p.iter().find(|p| p.id == "mdev0").unwrap().host, None);
    assert_eq!(
        c.find_passthrough("c5:00.1".parse().unwrap(), B).unwrap(),
        Some("hostpci1".into())
    );
    assert_eq!(
        c.find_passthrough("c7:00.0".parse().unwrap(), B).unwrap(),
        None
    );
    let g = c.guest_functions(B).unwrap();
    let f = |id: &str| g.iter().find(|f| f.id == id).unwrap().slot.clone();
    assert_eq!(f("hostpci2.0"), f("hostpci2.1"));
    assert_ne!(f("hostpci0"), f("hostpci1"));
}

#[test]
fn release_waits_for_every_device_with_one_deadline() {
    let fake = Fake::qemu(vm_answer(Vm {
        eject: vec![
            ("hostpci0", Some(Duration::from_millis(30))),
            ("hostpci1", Some(Duration::from_millis(60))),
        ],
        status: "running",
    }));
    let mut c = Client::connect(&fake.path, B).unwrap();
    let mut j = Journal::new(false);
    let r = release(&mut c, &["hostpci0".into(), "hostpci1".into()], &mut j, B).unwrap();
    assert!(r.all_released(), "{r:?}");
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.devices[0].host, Some("c5:00.0".parse().unwrap()));
    assert!(matches!(r.devices[1].outcome, Outcome::Released { .. }));
    let dels: Vec<String> = j
        .writes()
        .map(|w| w.device.clone().unwrap_or_default())
        .collect();
    assert_eq!(dels, ["hostpci0", "hostpci1"]);
}

#[test]
fn a_multi_function_slot_gets_one_device_del_and_each_function_is_reported() {
    let fake = Fake::qemu(vm_answer(Vm {
        eject: vec![
            ("hostpci2.0", Some(Duration::from_millis(10))),
            ("hostpci2.1", Some(Duration::from_millis(10))),
        ],
        status: "running",
    }));
    let mut c = Client::connect(&fake.path, B).unwrap();
    let mut j = Journal::new(false);
    let r = release(&mut c, &["hostpci2.1".into()], &mut j, B).unwrap();
    assert!(r.all_released(), "{r:?}");
    let ids: Vec<(&str, &str)> = r
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.via.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("hostpci2.0", "hostpci2.0"), ("hostpci2.1", "hostpci2.0")]
    );
    assert_eq!(j.writes().count(), 1);
    drop(c);
    assert_eq!(
        fake.commands()
            .iter()
            .filter(|c| *c == "device_del")
            .count(),
        1
    );
}

#[test]
fn a_paused_guest_times_out_and_says_why() {
    let fake = Fake::qemu(vm_answer(Vm {
        eject: vec![("hostpci0", Some(Duration::from_millis(5)))],
        status: "paused",
    }));
    let mut c = Client::connect(&fake.path, B).unwrap();
    let mut j = Journal::new(false);
    let r = release(
        &mut c,
        &["hostpci0".into(), "hostpci1".into()],
        &mut j,
        Duration::from_millis(300),
    )
    .unwrap();
    assert_eq!(r.exit_code(), crate::error::exit::TIMEOUT);
    assert!(matches!(r.devices[0].outcome, Outcome::Released { .. }));
    assert_eq!(r.devices[1].outcome, Outcome::TimedOut { bound_ms: 300 });
    assert_eq!(r.vm_status.as_deref(), Some("paused"));
    assert!(timeout_reason(r.vm_status.as_deref()).contains("paused"));
}

#[test]
fn refusals_are_reported_per_device() {
    let fake = Fake::qemu(vm_answer(Vm {
        eject: vec![],
        status: "running",
    }));
    let mut c = Client::connect(&fake.path, B).unwrap();
    let mut j = Journal::new(false);
    let r = release(&mut c, &["net0".into()], &mut j, B).unwrap();
    assert!(
        matches!(&r.devices[0].outcome, Outcome::Refused { desc, .. } if desc.contains("hotplugging"))
    );
    assert_eq!(r.exit_code(), crate::error::exit::FAILED);
    let r = release(&mut c, &["nosuch".into()], &mut j, B).unwrap();
    assert_eq!(r.exit_code(), crate::error::exit::USAGE);
}

#[test]
fn a_dry_run_sends_no_device_del() {
    let fake = Fake::qemu(vm_answer(Vm {
        eject: vec![("hostpci0", Some(Duration::ZERO))],
        status: "running",
    }));
    let mut c = Client::connect(&fake.path, B).unwrap();
    let mut j = Journal::new(true);
    let r = release(&mut c, &["hostpci0".into()], &mut j, B).unwrap();
    assert_eq!(r.devices[0].outcome, Outcome::DryRun);
    assert_eq!(r.exit_code(), 0);
    assert_eq!(j.writes().count(), 1);
    drop(c);
    assert!(!fake.commands().contains(&"device_del".to_string()));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever bytes the other end sends, in whatever pieces, a call ends (answer or error)
    /// within its bound and never panics.
    #[test]
    fn any_byte_stream_gives_an_answer_or_an_error(
        chunks in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                proptest::prelude::Just(b"{\"return\": {}, \"id\": 1}\r\n".to_vec()),
                proptest::prelude::Just(b"{\"event\": \"X\", \"data\": {}}\n".to_vec()),
                proptest::prelude::Just(b"\n".to_vec()),
            ],
            0..8,
        ),
        close in proptest::prelude::any::<bool>(),
    ) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = Client::over(a, Path::new("pair"));
        for ch in &chunks {
            b.write_all(ch).unwrap();
        }
        // An open peer that says no more: the call must end by its deadline.
        let _peer = if close { None } else { Some(b) };
        let t = Instant::now();
        let _ = c.execute("query-status", Value::Null, Duration::from_millis(20));
        proptest::prop_assert!(t.elapsed() < Duration::from_secs(2));
        let _ = c.next_event(Instant::now() + Duration::from_millis(5));
    }
}

#[test]
fn a_monitor_that_accepts_nobody_is_a_bounded_connect() {
    use nix::errno::Errno;
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    // QEMU listens with a backlog of one and, while a client holds the monitor, accepts no other:
    // with the backlog full a blocking connect(2) would wait for ever.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.qmp");
    let addr = UnixAddr::new(&path).unwrap();
    let new = |flags| socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap();
    let listener = new(SockFlag::SOCK_CLOEXEC);
    bind(listener.as_raw_fd(), &addr).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // Fill the backlog with connections nobody accepts (non-blocking, so this test cannot hang).
    let mut held = Vec::new();
    loop {
        let s = new(SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK);
        match connect(s.as_raw_fd(), &addr) {
            Ok(()) => held.push(s),
            Err(Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(held.len() < 64, "the backlog never filled");
    }
    let t = Instant::now();
    let e = Client::connect(&path, Duration::from_millis(100)).unwrap_err();
    let line = e.one_line();
    assert!(t.elapsed() < Duration::from_secs(5), "{line}");
    assert_eq!(e.exit_code(), crate::error::exit::TIMEOUT, "{line}");
    assert!(line.contains("timed out after 100 ms"), "{line}");
    assert!(line.contains("accept the connection"), "{line}");
}
