//! `resetlab release` end to end against an in-process fake QEMU monitor: DEV looked up through
//! vfio-pci `host` properties, a slot's functions, exit codes, `--dry-run` sending nothing, the
//! trace. (The real QEMU and guest: tests/guest_release.rs.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

/// A fake monitor for one VM: hostpci0 passes c5:00.0, hostpci1 c5:00.1 (each on its own root
/// port, as the seed's VM 100), net0 is an emulated NIC on the root bus. Serves one connection.
struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(paused: bool) -> Fake {
        Fake::start_at(paused, "100.qmp")
    }

    /// The socket at `rel` beneath a fresh temp dir.
    fn start_at(paused: bool, rel: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let thread = std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let send = |s: &mut std::os::unix::net::UnixStream, v: Value| {
                s.write_all(format!("{v}\r\n").as_bytes()).is_ok()
            };
            send(
                &mut s,
                json!({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22}}, "capabilities": []}}),
            );
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let req: Value = serde_json::from_str(&line).unwrap();
                line.clear();
                let cmd = req["execute"].as_str().unwrap_or("").to_string();
                log.lock().unwrap().push(cmd.clone());
                let a = &req["arguments"];
                let ok = |v: Value| json!({"return": v, "id": req["id"]});
                let err =
                    |c: &str, d: String| json!({"error": {"class": c, "desc": d}, "id": req["id"]});
                let mut out = vec![];
                match cmd.as_str() {
                    "qmp_capabilities" => out.push(ok(json!({}))),
                    "qom-list" if a["path"] == "/machine/peripheral" => out.push(ok(json!([
                        {"name": "hostpci0", "type": "child<vfio-pci>"},
                        {"name": "hostpci1", "type": "child<vfio-pci>"},
                        {"name": "net0", "type": "child<e1000e>"},
                    ]))),
                    "qom-list" => out.push(err("DeviceNotFound", "no such path".into())),
                    "qom-get" => match a["path"].as_str().unwrap() {
                        "/machine/peripheral/hostpci0" => out.push(ok(json!("0000:c5:00.0"))),
                        "/machine/peripheral/hostpci1" => out.push(ok(json!("0000:c5:00.1"))),
                        p => out.push(err("GenericError", format!("Property '{p}.host' not found"))),
                    },
                    "query-pci" => out.push(ok(json!([{"bus": 0, "devices": [
                        {"bus": 0, "slot": 2, "function": 0, "qdev_id": "net0"},
                        {"bus": 0, "slot": 16, "function": 0, "qdev_id": "rp0",
                         "pci_bridge": {"bus": {"number": 1}, "devices": [{"bus": 1, "slot": 0, "function": 0, "qdev_id": "hostpci0"}]}},
                        {"bus": 0, "slot": 17, "function": 0, "qdev_id": "rp1",
                         "pci_bridge": {"bus": {"number": 2}, "devices": [{"bus": 2, "slot": 0, "function": 0, "qdev_id": "hostpci1"}]}},
                    ]}]))),
                    "query-status" => out.push(ok(json!({"status": if paused { "paused" } else { "running" }}))),
                    "device_del" => {
                        let id = a["id"].as_str().unwrap().to_string();
                        if id == "net0" {
                            out.push(err("GenericError", "Bus 'pcie.0' does not support hotplugging".into()));
                        } else if id.starts_with("hostpci") {
                            out.push(ok(json!({})));
                            if !paused {
                                out.push(json!({"event": "DEVICE_DELETED", "data": {"device": id, "path": format!("/machine/peripheral/{id}")}}));
                            }
                        } else {
                            out.push(err("DeviceNotFound", format!("Device '{id}' not found")));
                        }
                    }
                    c => out.push(err("CommandNotFound", format!("The command {c} has not been found"))),
                }
                for v in out {
                    if !send(&mut s, v) {
                        return;
                    }
                }
            }
        });
        Fake {
            _dir: dir,
            path,
            seen,
            thread: Some(thread),
        }
    }

    fn socket(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The commands it received, once the client is gone.
    fn commands(mut self) -> Vec<String> {
        if let Some(t) = self.thread.take() {
            if !t.is_finished() {
                let _ = std::os::unix::net::UnixStream::connect(&self.path);
            }
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn dev_is_found_by_its_vfio_host_and_released() {
    let f = Fake::start(false);
    let v = common::json(&["release", "0000:c5:00.0", "--qmp", f.socket(), "--json"]);
    assert_eq!(v["devices"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["devices"][0]["id"], "hostpci0");
    assert_eq!(v["devices"][0]["host"], "0000:c5:00.0");
    assert_eq!(v["devices"][0]["outcome"], "released");
    assert!(v["released_ms"].as_f64().is_some(), "{v}");
    let cmds = f.commands();
    assert_eq!(cmds.iter().filter(|c| *c == "device_del").count(), 1);
}

#[test]
fn a_slot_releases_every_function_the_vm_has() {
    let f = Fake::start(false);
    let o = common::run(&["release", "c5:00", "--qmp", f.socket()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("hostpci0 (0000:c5:00.0): released in"),
        "{out}"
    );
    assert!(
        out.contains("hostpci1 (0000:c5:00.1): released in"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().starts_with("released in "),
        "{out}"
    );
}

#[test]
fn vmid_finds_the_proxmox_socket_beside_a_twin_tree() {
    let f = Fake::start_at(false, "var/run/qemu-server/100.qmp");
    let root = f.path.parent().unwrap().join("../../..");
    let sys = root.join("sys");
    std::fs::create_dir_all(&sys).unwrap();
    let o = common::run(&[
        "--sysfs",
        sys.to_str().unwrap(),
        "release",
        "c5:00.0",
        "--vmid",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("hostpci0 (0000:c5:00.0): released in"));
    // No VM 101 there: the line says what to check.
    let o = common::run(&[
        "--sysfs",
        sys.to_str().unwrap(),
        "release",
        "c5:00.0",
        "--vmid",
        "101",
    ]);
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("101.qmp"), "{}", stderr(&o));
    assert!(stderr(&o).contains("is the VM running?"), "{}", stderr(&o));
}

#[test]
fn a_paused_guest_is_exit_4_with_the_reason() {
    let f = Fake::start(true);
    let o = common::run(&[
        "release",
        "c5:00.1",
        "--qmp",
        f.socket(),
        "--timeout-ms",
        "200",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(out.contains("not released within 200 ms"), "{out}");
    assert!(out.contains("paused"), "{out}");
}

#[test]
fn refusals_and_bad_input_have_their_exit_codes() {
    let f = Fake::start(false);
    let o = common::run(&["release", "--qmp", f.socket(), "--id", "net0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("does not support hotplugging"));

    let f = Fake::start(false);
    let o = common::run(&["release", "--qmp", f.socket(), "--id", "nosuch"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));

    let f = Fake::start(false);
    let o = common::run(&["release", "c6:00.0", "--qmp", f.socket()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no vfio-pci device passing through '0000:c6:00.0"),
        "{}",
        stderr(&o)
    );

    let f = Fake::start(false);
    let o = common::run(&[
        "release",
        "c5:00.0",
        "--qmp",
        f.socket(),
        "--id",
        "hostpci1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("passes 0000:c5:00.1 through, not 0000:c5:00.0"),
        "{}",
        stderr(&o)
    );
    assert!(!f.commands().contains(&"device_del".to_string()));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "").unwrap();
    let o = common::run(&["release", "--qmp", file.to_str().unwrap(), "--id", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a QEMU monitor socket"));

    // Neither DEV nor --id.
    let o = common::run(&["release", "--qmp", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_dry_run_sends_no_device_del_and_traces_it() {
    let f = Fake::start(false);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let o = common::run(&[
        "release",
        "c5:00.0",
        "--qmp",
        f.socket(),
        "--dry-run",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("dry run: 1 command(s) would be sent, none was"),
        "{out}"
    );
    assert!(out.contains(r#""execute":"device_del""#), "{out}");
    assert!(!f.commands().contains(&"device_del".to_string()));
    let rec: Vec<Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let q: Vec<&Value> = rec.iter().filter(|r| r["target"] == "qmp").collect();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["device"], "hostpci0");
    assert_eq!(q[0]["dry_run"], true);
    assert_eq!(q[0]["method"], "release");
}
