//! The proxy settings and errors through the C ABI: `proxy_url`, `no_proxy`
//! and `proxy_from_env` of `kvs_client_config` (and an older `struct_size`
//! that ends before them), each proxy error code with its last-error text,
//! against a real tinyproxy and the emulator with TLS on; the password in no
//! last-error text and no line of the log callback.

mod common;
mod proxy_support;

use common::EmulatorThread;
use kvs_signaling::emulator::{EmulatorConfig, TlsSetting};
use kvs_signaling::ffi::kvs_result::{self, *};
use kvs_signaling::ffi::*;
use proxy_support::{PROXY_PASSWORD, PROXY_USER, Tinyproxy, available, free_port};
use std::ffi::{CStr, CString, c_char, c_void};
use std::io::Read;
use std::ptr;
use std::sync::Mutex;

static LOG_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn on_log(
    _userdata: *mut c_void,
    _level: u32,
    _target: *const c_char,
    message: *const c_char,
    _len: usize,
) {
    let message = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    LOG_LINES.lock().unwrap().push(message);
}

/// Collects every log line of the library (once per process).
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| assert_eq!(kvs_set_log_callback(5, Some(on_log), ptr::null_mut(), None), KVS_OK));
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(kvs_last_error_message()) }.to_string_lossy().into_owned()
}

/// The emulator with TLS on, and its CA file.
fn emulator(name: &str) -> (EmulatorThread, CString) {
    let ca = std::env::temp_dir().join(format!("kvs-ffi-proxy-{}-{name}-ca.pem", std::process::id()));
    let emulator = EmulatorThread::start_with(EmulatorConfig {
        tls: Some(TlsSetting::Generate { ca_out: Some(ca.clone()) }),
        ..EmulatorConfig::default()
    });
    (emulator, CString::new(ca.to_str().unwrap()).unwrap())
}

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// Strings a config borrows.
struct Settings {
    arn: CString,
    endpoint: CString,
    ca: CString,
    proxy_url: Option<CString>,
    no_proxy: Option<CString>,
}

impl Settings {
    fn new(emulator: &EmulatorThread, ca: &CString, proxy_url: Option<&str>, no_proxy: Option<&str>) -> Settings {
        Settings {
            arn: CString::new(emulator.arn.clone()).unwrap(),
            endpoint: CString::new(emulator.endpoint.clone()).unwrap(),
            ca: ca.clone(),
            proxy_url: proxy_url.map(|u| CString::new(u).unwrap()),
            no_proxy: no_proxy.map(|n| CString::new(n).unwrap()),
        }
    }

    fn config(&self) -> kvs_client_config {
        let mut config = kvs_client_config_default();
        config.channel_arn = self.arn.as_ptr();
        config.endpoint = self.endpoint.as_ptr();
        config.ca_bundle_path = self.ca.as_ptr();
        config.connect_timeout_ms = 8000;
        config.proxy_url = self.proxy_url.as_ref().map_or(ptr::null(), |u| u.as_ptr());
        config.no_proxy = self.no_proxy.as_ref().map_or(ptr::null(), |n| n.as_ptr());
        config
    }
}

/// `kvs_client_connect`'s result for `config` and the last-error text.
fn connect(config: &kvs_client_config) -> (kvs_result, String) {
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(config, &mut client), KVS_OK, "{}", last_error());
    let result = kvs_client_connect(client);
    let text = if result == KVS_OK { String::new() } else { last_error() };
    assert_eq!(kvs_client_free(client), KVS_OK);
    (result, text)
}

fn assert_password_hidden(texts: &[&str]) {
    for text in texts {
        assert!(!text.contains(PROXY_PASSWORD) && !text.contains("wrong-Pa55word"), "the password leaked: {text}");
    }
    for line in LOG_LINES.lock().unwrap().iter() {
        assert!(!line.contains(PROXY_PASSWORD) && !line.contains("wrong-Pa55word"), "the password leaked: {line}");
    }
}

#[test]
fn connect_through_the_proxy_and_each_refusal_has_its_code() {
    if !available("connect_through_the_proxy_and_each_refusal_has_its_code") {
        return;
    }
    capture_logs();
    let (emulator, ca) = emulator("codes");
    let port = port_of(&emulator.endpoint);
    let proxy = Tinyproxy::start(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));

    let good = Settings::new(&emulator, &ca, Some(&proxy.url_with(PROXY_USER, PROXY_PASSWORD)), None);
    assert_eq!(connect(&good.config()), (KVS_OK, String::new()));
    assert_eq!(proxy.connects_to(port), 1, "{}", proxy.log());

    let wrong = Settings::new(&emulator, &ca, Some(&proxy.url_with(PROXY_USER, "wrong-Pa55word")), None);
    let (result, wrong_text) = connect(&wrong.config());
    assert_eq!(result, KVS_ERR_PROXY_AUTH_REQUIRED, "{wrong_text}");
    assert!(wrong_text.contains("refused the credentials of user \"camera\""), "{wrong_text}");
    let missing = Settings::new(&emulator, &ca, Some(&proxy.url()), None);
    let (result, missing_text) = connect(&missing.config());
    assert_eq!(result, KVS_ERR_PROXY_AUTH_REQUIRED, "{missing_text}");
    assert!(missing_text.contains("requires credentials"), "{missing_text}");

    let refusing = Tinyproxy::start("ConnectPort 9");
    let refused = Settings::new(&emulator, &ca, Some(&refusing.url()), None);
    let (result, refused_text) = connect(&refused.config());
    assert_eq!(result, KVS_ERR_PROXY_REFUSED, "{refused_text}");
    assert!(refused_text.contains("HTTP 403"), "{refused_text}");

    let down_url = format!("http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}", free_port());
    let down = Settings::new(&emulator, &ca, Some(&down_url), None);
    let (result, down_text) = connect(&down.config());
    assert_eq!(result, KVS_ERR_PROXY_UNREACHABLE, "{down_text}");

    // A proxy that reads CONNECT and hangs up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closing_url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let closer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 1024];
        let _ = stream.read(&mut buffer);
    });
    let closing = Settings::new(&emulator, &ca, Some(&closing_url), None);
    let (result, closed_text) = connect(&closing.config());
    closer.join().unwrap();
    assert_eq!(result, KVS_ERR_PROXY_CLOSED, "{closed_text}");

    // The no-proxy list names the emulator: directly, although the proxy is down.
    let bypassed = Settings::new(&emulator, &ca, Some(&down_url), Some("localhost, 127.0.0.1"));
    assert_eq!(connect(&bypassed.config()), (KVS_OK, String::new()));

    for code in [KVS_ERR_PROXY_UNREACHABLE, KVS_ERR_PROXY_AUTH_REQUIRED, KVS_ERR_PROXY_REFUSED, KVS_ERR_PROXY_CLOSED] {
        assert_eq!(kvs_result::from_u32(code as u32), Some(code));
        let text = unsafe { CStr::from_ptr(kvs_result_str(code as u32)) }.to_string_lossy().into_owned();
        assert!(text.contains("proxy"), "{text}");
    }
    assert_password_hidden(&[&wrong_text, &missing_text, &refused_text, &down_text, &closed_text]);
}

#[test]
fn bad_proxy_settings_are_refused_by_kvs_client_new() {
    capture_logs();
    let (emulator, ca) = emulator("config");
    for (url, why) in [
        (format!("https://{PROXY_USER}:{PROXY_PASSWORD}@proxy:443"), "TLS to the proxy is not supported"),
        (format!("http://{PROXY_USER}:{PROXY_PASSWORD}@proxy:0"), "port 0"),
        (format!("http://{PROXY_USER}:{PROXY_PASSWORD}@proxy/path"), "path"),
    ] {
        let settings = Settings::new(&emulator, &ca, Some(&url), None);
        let mut client = ptr::null_mut();
        assert_eq!(kvs_client_new(&settings.config(), &mut client), KVS_ERR_INVALID_CONFIG);
        let text = last_error();
        assert!(text.contains(why) && text.contains("camera:***@proxy"), "{text}");
        assert_password_hidden(&[&text]);
        assert!(client.is_null());
    }
    let bad_utf8 = [b'h', b't', 0xff, 0];
    let settings = Settings::new(&emulator, &ca, None, None);
    let mut config = settings.config();
    config.proxy_url = bad_utf8.as_ptr().cast();
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_ERR_INVALID_UTF8, "{}", last_error());
    config.proxy_url = ptr::null();
    config.no_proxy = bad_utf8.as_ptr().cast();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_ERR_INVALID_UTF8, "{}", last_error());

    // A caller built against a header without the proxy fields: they are
    // not read (here they hold a URL that would be refused).
    let https = CString::new("https://proxy:443").unwrap();
    let mut older = settings.config();
    older.proxy_url = https.as_ptr();
    older.proxy_from_env = true;
    older.struct_size = std::mem::offset_of!(kvs_client_config, proxy_url);
    assert_eq!(kvs_client_new(&older, &mut client), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_free(client), KVS_OK);
}
