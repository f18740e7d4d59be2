//! A real HTTP proxy for the tests: Debian's tinyproxy, started on
//! 127.0.0.1 with a temporary configuration, stopped (its process killed)
//! when dropped. Its log records every CONNECT, which proves a tunnel was used.
//!
//! Where `tinyproxy` is not installed the tests pass with a "skipped: ..."
//! line on stderr; with `KVS_REQUIRE_PROXY=1` in the environment they fail
//! instead (CI installs the package and sets it).
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Makes a missing tinyproxy a failure.
const REQUIRE_ENV: &str = "KVS_REQUIRE_PROXY";
/// The proxy's user and password, where a test asks for authentication.
pub const PROXY_USER: &str = "camera";
pub const PROXY_PASSWORD: &str = "pr0xy-Pa55word-never-logged";

/// A running tinyproxy.
pub struct Tinyproxy {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

/// Whether tinyproxy is installed; false (after a "skipped" line on stderr)
/// when it is missing and not required, a panic when `KVS_REQUIRE_PROXY=1`.
pub fn available(test: &str) -> bool {
    let found = Command::new("tinyproxy").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        if std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1") {
            panic!("{REQUIRE_ENV}=1 but tinyproxy is not installed (apt-get install tinyproxy-bin)");
        }
        eprintln!("skipped: {test} needs tinyproxy (apt-get install tinyproxy-bin)");
    }
    found
}

/// A port nothing listens on (just released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Tinyproxy {
    /// Starts tinyproxy on a free port with `rules` (config lines such as
    /// `BasicAuth user password` or `ConnectPort 9`) added to the base config.
    pub fn start(rules: &str) -> Tinyproxy {
        Tinyproxy::start_on(free_port(), rules)
    }

    /// Starts tinyproxy on `port` and waits (at most 10 s) until it accepts.
    pub fn start_on(port: u16, rules: &str) -> Tinyproxy {
        let unique = format!("kvs-tinyproxy-{}-{port}", std::process::id());
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("tinyproxy.log");
        let _ = std::fs::remove_file(&log);
        let config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nLogLevel Info\nLogFile \"{}\"\n{rules}\n",
            log.display()
        );
        let config_path = dir.join("tinyproxy.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        let proxy = Tinyproxy { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// What tinyproxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }

    /// How many `CONNECT 127.0.0.1:port` requests the log shows.
    pub fn connects_to(&self, port: u16) -> usize {
        let request = format!("CONNECT 127.0.0.1:{port} ");
        self.log().lines().filter(|line| line.contains(&request)).count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
