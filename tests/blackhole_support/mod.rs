//! A real black hole for fault tests: packets of one TCP connection (or of a
//! port) vanish, with no FIN, no RST and no ACK, the way a dead Wi-Fi or LTE
//! link looks. Loopback always acknowledges, so the packets are taken off it:
//!
//! * The test runs in its own process inside a private network namespace: the
//!   test binary starts itself again (`unshare --net <binary> <test> --exact`)
//!   and [`private_netns`] returns the namespace in that child only. Every
//!   thread and socket of the child (the tokio runtime, the client, an
//!   in-process emulator) lives in the namespace, and the namespace ends with
//!   the child: nothing is left behind, even when the test fails or is killed.
//! * In it, `lo` gets a `clsact` qdisc and a veth pair, both ends up, without
//!   addresses; a black hole is a pair of u32 filters on `lo`'s egress that
//!   redirect the matching packets (both directions) into the veth. Its far end
//!   discards them (their destination MAC is not its own, and no address is
//!   its), while the sending socket sees a successful transmit: exactly a
//!   packet lost on the way. (A veth without carrier would not do: the redirect
//!   then fails, and TCP takes a local drop for congestion and keeps retrying
//!   without counting the probe as unanswered.) Deleting the filters ends it
//!   ([`BlackHole`]'s `Drop`).
//!
//! (This kernel has no `netem` and no tc `drop` action, and there is no
//! iptables/nft; `mirred` into a carrier-less veth works everywhere `ip` and `tc`
//! from iproute2 do.)
//!
//! Needs Linux, root, `unshare` (util-linux) and `ip`/`tc` (iproute2). Where
//! one is missing the test passes with a "skipped: ..." line on stderr; with
//! `KVS_REQUIRE_NETNS=1` in the environment it fails instead.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set in the child process: the name of the test it runs.
const CHILD_ENV: &str = "KVS_BLACKHOLE_NETNS_TEST";
/// Makes every skip a failure (for CI, which runs as root).
const REQUIRE_ENV: &str = "KVS_REQUIRE_NETNS";
/// The child is killed after this long: a test must end by itself.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// The veth end the filters redirect into; its peer receives and discards.
const SINK: &str = "kvsbh0";
const SINK_PEER: &str = "kvsbh1";

/// The namespace the calling test runs in (inside the child process only).
pub struct Netns {
    next_prio: AtomicU32,
}

fn skip(why: &str) {
    if std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1") {
        panic!("{REQUIRE_ENV}=1 but the black-hole test cannot run: {why}");
    }
    eprintln!("skipped: {why}");
}

/// Runs `program args` and returns its stderr when it fails to start or fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{program}`: {e}")),
    }
}

/// Runs the test `test` (its name as libtest knows it) inside a private
/// network namespace. In the test process itself it starts the child, waits
/// for it (at most two minutes), shows its output, asserts that it passed and
/// returns `None`: the caller returns. In the child it prepares the namespace
/// and returns it: the caller runs the test body. Returns `None` after a
/// "skipped: ..." line where namespaces, `ip` or `tc` are not available.
pub fn private_netns(test: &str) -> Option<Netns> {
    if std::env::var(CHILD_ENV).is_ok_and(|t| t == test) {
        return match prepare() {
            Ok(netns) => Some(netns),
            Err(why) => {
                skip(&why);
                None
            }
        };
    }
    if !cfg!(target_os = "linux") {
        skip("network namespaces are Linux only");
        return None;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip("a private network namespace needs root");
        return None;
    }
    for (program, args) in [("unshare", &["--net", "true"][..]), ("ip", &["-V"][..]), ("tc", &["-V"][..])] {
        if let Err(why) = run(program, args) {
            skip(&format!("{why} (needs util-linux and iproute2)"));
            return None;
        }
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare starts");
    // Drain both pipes on threads so that a chatty child never blocks.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    eprintln!("--- {test} in a private network namespace ---\n{out}{err}--- end of {test} ---");
    match status {
        Some(status) => assert!(status.success(), "{test} failed in its network namespace ({status})"),
        None => panic!("{test} did not end within {} s in its network namespace", CHILD_TIMEOUT.as_secs()),
    }
    assert!(out.contains(&format!("test {test} ... ok")), "the child did not run {test}");
    None
}

/// Brings `lo` up and installs the discarding veth and the `clsact` qdisc.
fn prepare() -> Result<Netns, String> {
    run("ip", &["link", "set", "lo", "up"])?;
    run("ip", &["link", "add", SINK, "type", "veth", "peer", "name", SINK_PEER])?;
    run("ip", &["link", "set", SINK, "up"])?;
    run("ip", &["link", "set", SINK_PEER, "up"])?;
    run("tc", &["qdisc", "add", "dev", "lo", "clsact"])?;
    let netns = Netns { next_prio: AtomicU32::new(1) };
    // A filter that matches nothing real proves mirred and u32 are there.
    netns.black_hole(&[(Some(1), Some(1))])?;
    Ok(netns)
}

/// Packets of one connection or one port stop on the wire while it lives.
pub struct BlackHole {
    prios: Vec<u32>,
    pub started: Instant,
}

impl BlackHole {
    /// Lets packets through again.
    pub fn end(self) {}
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        for prio in &self.prios {
            if let Err(why) = run("tc", &["filter", "del", "dev", "lo", "egress", "prio", &prio.to_string()]) {
                eprintln!("black hole not removed: {why}");
            }
        }
    }
}

impl Netns {
    /// One filter per `(source port, destination port)`; `None` matches any
    /// (one of the two must be given).
    fn black_hole(&self, matches: &[(Option<u16>, Option<u16>)]) -> Result<BlackHole, String> {
        let mut hole = BlackHole { prios: Vec::new(), started: Instant::now() };
        for (sport, dport) in matches {
            let prio = self.next_prio.fetch_add(1, Ordering::Relaxed).to_string();
            let mut args: Vec<String> =
                ["filter", "add", "dev", "lo", "egress", "protocol", "ip", "prio", &prio, "u32"]
                    .map(String::from)
                    .into();
            for (key, port) in [("sport", sport), ("dport", dport)] {
                if let Some(port) = port {
                    args.extend(["match", "ip", key, &port.to_string(), "0xffff"].map(String::from));
                }
            }
            args.extend(["action", "mirred", "egress", "redirect", "dev", SINK].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("tc", &args)?;
            hole.prios.push(prio.parse().expect("a number"));
        }
        hole.started = Instant::now();
        Ok(hole)
    }

    /// Every packet between local ports `a` and `b` (both directions) vanishes.
    pub fn black_hole_connection(&self, a: u16, b: u16) -> BlackHole {
        self.black_hole(&[(Some(a), Some(b)), (Some(b), Some(a))]).expect("black hole installed")
    }

    /// Every packet to or from local port `port` vanishes: the whole server
    /// behind it goes silent, new connections included (their SYNs vanish).
    pub fn black_hole_port(&self, port: u16) -> BlackHole {
        self.black_hole(&[(Some(port), None), (None, Some(port))]).expect("black hole installed")
    }
}

/// The local ports of the established IPv4 connections to `server_port`
/// (the client ends; the namespace holds only the test's sockets).
pub fn client_ports(server_port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let hex_port = |address: &str| address.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; 01 = ESTABLISHED
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            (*state == "01" && hex_port(remote) == Some(server_port)).then(|| hex_port(local)).flatten()
        })
        .collect()
}
