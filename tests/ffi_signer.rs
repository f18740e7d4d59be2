//! Signing by a backend, presigned URLs, the user-agent suffix and channel
//! tags through the C ABI, called from Rust as C would call it, against the
//! emulator with TLS and SigV4 on (on its own runtime thread). The signer
//! callback plays the application's backend: it signs with the emulator's
//! keys through the library's own SigV4 functions; the clients hold no
//! credentials.

mod common;

use common::{EmulatorThread, wait_for};
use kvs_signaling::aws::sigv4::{presign_wss_url, sign_request};
use kvs_signaling::aws::{ControlPlane, ControlPlaneConfig, Credentials, StaticCredentials};
use kvs_signaling::emulator::{EmulatorConfig, TlsSetting};
use kvs_signaling::ffi::kvs_result::{self, *};
use kvs_signaling::ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY: &str = "AKIDEXAMPLEFFISIGNER";
const SECRET: &str = "ffi/signer/secret/EXAMPLE";
const SUFFIX: &str = "acme-nvr/3.0";

fn secure_emulator() -> EmulatorThread {
    let ca = std::env::temp_dir().join(format!("kvs-ffi-signer-{}-{:?}.pem", std::process::id(), SystemTime::now()));
    EmulatorThread::start_with(EmulatorConfig {
        auth: Some(vec![(KEY.into(), SECRET.into())]),
        tls: Some(TlsSetting::Generate { ca_out: Some(ca) }),
        ..EmulatorConfig::default()
    })
}

/// What the backend answers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Sign,
    Garbage,
    Cleartext,
    TooLong,
    Refuse,
    Silent,
    /// Signs, but answers through the sink from a thread of its own (the
    /// callback waits for it).
    FromAnotherThread,
}

/// The "backend", owned by the test (leaked for the process).
struct Backend {
    mode: Mutex<Mode>,
    urls: AtomicUsize,
    requests: AtomicUsize,
    threads: Mutex<Vec<String>>,
    /// The code `kvs_sign_sink_set_url` returned last.
    sink_code: Mutex<Option<kvs_result>>,
    /// The sink of the last URL request, kept (wrongly) past its callback.
    kept_sink: AtomicUsize,
    /// What using the previous request's sink inside a later callback returned.
    stale_in_callback: Mutex<Vec<kvs_result>>,
}

fn text(ptr: *const c_char) -> Option<String> {
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn backend_sign(
    userdata: *mut c_void,
    request: *const kvs_sign_request,
    sink: *mut kvs_sign_sink,
) -> u32 {
    let backend = unsafe { &*(userdata as *const Backend) };
    let request = unsafe { &*request };
    backend.threads.lock().unwrap().push(std::thread::current().name().unwrap_or("?").to_owned());
    let credentials = Credentials::new(KEY, SECRET, Some("backend-token"));
    let time = UNIX_EPOCH + Duration::from_millis(request.time_unix_ms);
    let region = text(request.region).unwrap();
    let mode = *backend.mode.lock().unwrap();
    if mode == Mode::Refuse {
        return KVS_ERR_ACCESS_DENIED as u32;
    }
    if mode == Mode::Silent {
        return KVS_OK as u32;
    }
    if request.kind == kvs_sign_kind::HttpRequest as u32 {
        backend.requests.fetch_add(1, Ordering::SeqCst);
        let headers: Vec<(String, String)> = (0..request.header_count)
            .map(|i| {
                let header = unsafe { &*request.headers.add(i) };
                (text(header.name).unwrap(), text(header.value).unwrap())
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let body = unsafe { std::slice::from_raw_parts(request.body, request.body_len) };
        let method = text(request.method).unwrap();
        let url = text(request.url).unwrap();
        let signed = sign_request(&method, &url, &borrowed, body, &credentials, &region, time).unwrap();
        for (name, value) in signed {
            let (name, value) = (CString::new(name).unwrap(), CString::new(value).unwrap());
            assert_eq!(kvs_sign_sink_add_header(sink, name.as_ptr(), value.as_ptr()), KVS_OK);
        }
        return KVS_OK as u32;
    }
    backend.urls.fetch_add(1, Ordering::SeqCst);
    let endpoint = text(request.url).unwrap();
    let arn = text(request.channel_arn).unwrap();
    let client_id = text(request.client_id);
    let mut params = vec![("X-Amz-ChannelARN", arn.as_str())];
    if let Some(id) = &client_id {
        params.push(("X-Amz-ClientId", id.as_str()));
    }
    let signed = presign_wss_url(&endpoint, &params, &credentials, &region, time).unwrap();
    let url = match mode {
        Mode::Garbage => "}{ not a url".to_owned(),
        Mode::Cleartext => signed.replacen("wss://", "ws://", 1),
        Mode::TooLong => format!("{signed}&pad={}", "x".repeat(KVS_MAX_SIGNED_URL_LEN)),
        _ => signed,
    };
    let url = CString::new(url).unwrap();
    // The previous request's sink, used while this request's callback runs:
    // it must not reach this request.
    let previous = backend.kept_sink.swap(sink as usize, Ordering::SeqCst);
    if previous != 0 {
        let code = kvs_sign_sink_set_url(previous as *mut kvs_sign_sink, c"wss://elsewhere/?a=b".as_ptr());
        backend.stale_in_callback.lock().unwrap().push(code);
    }
    let code = if mode == Mode::FromAnotherThread {
        let sink = sink as usize;
        std::thread::spawn(move || kvs_sign_sink_set_url(sink as *mut kvs_sign_sink, url.as_ptr())).join().unwrap()
    } else {
        kvs_sign_sink_set_url(sink, url.as_ptr())
    };
    *backend.sink_code.lock().unwrap() = Some(code);
    KVS_OK as u32
}

fn backend() -> &'static Backend {
    Box::leak(Box::new(Backend {
        mode: Mutex::new(Mode::Sign),
        urls: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
        threads: Mutex::new(Vec::new()),
        sink_code: Mutex::new(None),
        kept_sink: AtomicUsize::new(0),
        stale_in_callback: Mutex::new(Vec::new()),
    }))
}

/// Offers received by a master: (sender, SDP).
static OFFERS: Mutex<Vec<(Option<String>, Option<String>)>> = Mutex::new(Vec::new());

unsafe extern "C" fn on_message(_: *mut c_void, message: *const kvs_message) {
    let m = unsafe { &*message };
    OFFERS.lock().unwrap().push((text(m.sender_client_id), text(m.sdp)));
}

/// Strings a config points at, kept alive for `kvs_client_new`.
struct Strings(Vec<CString>);

impl Strings {
    fn add(&mut self, s: &str) -> *const c_char {
        self.0.push(CString::new(s).unwrap());
        self.0.last().unwrap().as_ptr()
    }
}

fn new_client(config: &kvs_client_config) -> Result<*mut kvs_client, kvs_result> {
    let mut client = ptr::null_mut();
    match kvs_client_new(config, &mut client) {
        KVS_OK => Ok(client),
        code => Err(code),
    }
}

fn last_error() -> String {
    text(kvs_last_error_message()).unwrap_or_default()
}

#[test]
fn a_backend_callback_signs_for_clients_without_credentials_and_tags_reach_the_service() {
    let emulator = secure_emulator();
    let control_plane = emulator.with(|e| e.control_plane_url());
    let ca = emulator.with(|e| e.ca_path().unwrap().to_string_lossy().into_owned());
    let backend = backend();
    let mut strings = Strings(Vec::new());
    let tag_pairs = [("team", "video"), ("site", "Lyon 3/B"), ("empty", "")];
    let tags: Vec<kvs_tag> =
        tag_pairs.iter().map(|(k, v)| kvs_tag { key: strings.add(k), value: strings.add(v) }).collect();
    let configure = |strings: &mut Strings, viewer: bool| {
        let mut config = kvs_client_config_default();
        config.use_control_plane = true;
        config.channel_name = strings.add("tagged-cam");
        config.control_plane_url = strings.add(&control_plane);
        config.ca_bundle_path = strings.add(&ca);
        config.signer_callback = Some(backend_sign);
        config.userdata = (backend as *const Backend).cast_mut().cast();
        config.user_agent_suffix = strings.add(SUFFIX);
        if viewer {
            config.role = kvs_role::Viewer as u32;
            config.client_id = strings.add("viewer-1");
        } else {
            config.create_channel = true;
            config.tags = tags.as_ptr();
            config.tag_count = tags.len();
            config.on_message = Some(on_message);
        }
        config
    };
    let master_config = configure(&mut strings, false);
    let master = new_client(&master_config).unwrap();
    assert_eq!(kvs_client_connect(master), KVS_OK, "{}", last_error());
    let viewer_config = configure(&mut strings, true);
    let viewer = new_client(&viewer_config).unwrap();
    assert_eq!(kvs_client_connect(viewer), KVS_OK, "{}", last_error());
    let sdp = c"v=0\r\nsigned-by-backend\r\n";
    let rc = kvs_send_sdp_offer(viewer, ptr::null(), sdp.as_ptr(), ptr::null(), ptr::null_mut(), 0, ptr::null_mut());
    assert_eq!(rc, KVS_OK);
    let offer = wait_for("the offer", Duration::from_secs(5), || OFFERS.lock().unwrap().first().cloned());
    assert_eq!(offer, (Some("viewer-1".into()), Some("v=0\r\nsigned-by-backend\r\n".into())));

    // The suffix on every call and upgrade (before the test's own call below).
    let seen = emulator.with(|e| e.user_agents());
    let expected = format!("kvs-signaling/{} {SUFFIX}", env!("CARGO_PKG_VERSION"));
    assert_eq!((seen.https, seen.websocket), (vec![expected.clone()], vec![expected]));
    // Created with its tags, as CreateSignalingChannel stored them.
    let stored = emulator.with(|e| e.channel_tags("tagged-cam")).expect("the channel was created");
    let expected: Vec<(String, String)> = tag_pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    assert_eq!(stored, expected);
    // And ListTagsForResource, through the library's own control-plane call, lists them.
    let listed = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let credentials = Credentials::new(KEY, SECRET, None);
        let mut settings = ControlPlaneConfig::new("us-west-2", Arc::new(StaticCredentials::new(credentials)));
        settings.endpoint_override = Some(control_plane.clone());
        settings.ca_bundle = Some(ca.clone().into());
        let arn = emulator.with(|e| e.channel_arn("tagged-cam")).unwrap();
        ControlPlane::new(&settings).unwrap().list_tags(&arn).await.unwrap()
    });
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    // Every request signed by the callback, on the dispatcher thread; nothing refused.
    assert_eq!(backend.urls.load(Ordering::SeqCst), 2);
    assert!(backend.requests.load(Ordering::SeqCst) >= 5, "{}", backend.requests.load(Ordering::SeqCst));
    assert!(backend.threads.lock().unwrap().iter().all(|name| name == "kvs-callbacks"));
    assert_eq!(emulator.stats().auth_failures, 0);
    kvs_client_free(viewer);
    kvs_client_free(master);
}

#[test]
fn a_signer_callback_answer_that_cannot_be_used_is_a_named_code() {
    let emulator = secure_emulator();
    let ca = emulator.with(|e| e.ca_path().unwrap().to_string_lossy().into_owned());
    let backend = backend();
    let mut strings = Strings(Vec::new());
    let mut config = kvs_client_config_default();
    config.channel_arn = strings.add(&emulator.arn);
    config.endpoint = strings.add(&emulator.endpoint);
    config.ca_bundle_path = strings.add(&ca);
    config.signer_callback = Some(backend_sign);
    config.signer_timeout_ms = 2000;
    config.userdata = (backend as *const Backend).cast_mut().cast();
    let cases = [
        (Mode::Sign, KVS_OK),
        (Mode::Garbage, KVS_ERR_SIGNER_INVALID_URL),
        (Mode::Cleartext, KVS_ERR_SIGNER_NOT_WSS),
        (Mode::TooLong, KVS_ERR_SIGNER_TOO_LONG),
        (Mode::Refuse, KVS_ERR_SIGNER_FAILED),
        (Mode::Silent, KVS_ERR_SIGNER_FAILED),
        (Mode::FromAnotherThread, KVS_OK),
    ];
    for (mode, expected) in cases {
        *backend.mode.lock().unwrap() = mode;
        let client = new_client(&config).unwrap();
        let rc = kvs_client_connect(client);
        let message = last_error();
        assert_eq!(rc, expected, "{mode:?}: {message}");
        if rc != KVS_OK {
            assert_eq!(kvs_client_state(client), kvs_state::Disconnected as u32);
            assert!(!message.contains("X-Amz-Signature="), "{message}");
        }
        if mode == Mode::TooLong {
            // Refused by the sink already, whatever the callback returned.
            assert_eq!(*backend.sink_code.lock().unwrap(), Some(KVS_ERR_SIGNER_TOO_LONG));
        }
        kvs_client_free(client);
    }
    // A sink kept from an earlier request was refused inside later callbacks.
    let stale = backend.stale_in_callback.lock().unwrap().clone();
    assert!(stale.len() >= 4 && stale.iter().all(|&code| code == KVS_ERR_INVALID_ARGUMENT), "{stale:?}");
    // A sink kept after its callback returned, or a pointer that never was a
    // sink, is refused without being read.
    let url = c"wss://h/?a=b";
    let kept = backend.kept_sink.load(Ordering::SeqCst) as *mut kvs_sign_sink;
    assert!(!kept.is_null());
    for stale in [kept, ptr::dangling_mut::<u64>().cast::<kvs_sign_sink>()] {
        assert_eq!(kvs_sign_sink_set_url(stale, url.as_ptr()), KVS_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("not the sink of a running callback"), "{}", last_error());
        assert_eq!(kvs_sign_sink_add_header(stale, c"x-a".as_ptr(), c"b".as_ptr()), KVS_ERR_INVALID_ARGUMENT);
    }
}

/// A presigned URL for the emulator's channel, signed `age` ago.
fn presigned(emulator: &EmulatorThread, client_id: Option<&str>, age: Duration) -> String {
    let mut params = vec![("X-Amz-ChannelARN", emulator.arn.as_str())];
    if let Some(id) = client_id {
        params.push(("X-Amz-ClientId", id));
    }
    let credentials = Credentials::new(KEY, SECRET, None);
    presign_wss_url(&emulator.endpoint, &params, &credentials, "us-west-2", SystemTime::now() - age).unwrap()
}

fn unix_s(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn a_presigned_url_from_c_connects_and_its_expiry_is_reported() {
    let emulator = secure_emulator();
    let ca = emulator.with(|e| e.ca_path().unwrap().to_string_lossy().into_owned());
    let mut strings = Strings(Vec::new());
    let in_a_while = unix_s(SystemTime::now()) + 290;
    let configure = |strings: &mut Strings, url: &str, expiry: u64| {
        let mut config = kvs_client_config_default();
        config.role = kvs_role::Viewer as u32;
        config.presigned_url = strings.add(url);
        config.presigned_url_expiry_unix_s = expiry;
        config.ca_bundle_path = strings.add(&ca);
        config
    };
    // No channel ARN, endpoint or client id: all from the URL.
    let good = configure(&mut strings, &presigned(&emulator, Some("v-presigned"), Duration::ZERO), in_a_while);
    let client = new_client(&good).unwrap();
    assert_eq!(kvs_client_connect(client), KVS_OK, "{}", last_error());
    kvs_client_free(client);

    let expired =
        configure(&mut strings, &presigned(&emulator, Some("v2"), Duration::ZERO), unix_s(SystemTime::now()) - 5);
    let client = new_client(&expired).unwrap();
    assert_eq!(kvs_client_connect(client), KVS_ERR_PRESIGNED_URL_EXPIRED);
    assert!(last_error().contains("expired"), "{}", last_error());
    kvs_client_free(client);

    // Refused by the service (signed 10 minutes ago): the same code, no retry loop.
    let refused_before = emulator.stats().upgrades_refused;
    let stale = configure(&mut strings, &presigned(&emulator, Some("v3"), Duration::from_secs(600)), in_a_while);
    let client = new_client(&stale).unwrap();
    assert_eq!(kvs_client_connect(client), KVS_ERR_PRESIGNED_URL_EXPIRED);
    assert!(last_error().contains("403"), "{}", last_error());
    assert_eq!(emulator.stats().upgrades_refused, refused_before + 1);
    kvs_client_free(client);

    let without_expiry = configure(&mut strings, &presigned(&emulator, Some("v4"), Duration::ZERO), 0);
    assert_eq!(new_client(&without_expiry).err(), Some(KVS_ERR_INVALID_CONFIG));
}

#[test]
fn user_agent_suffixes_and_tags_from_c_are_checked() {
    let mut strings = Strings(Vec::new());
    let base = |strings: &mut Strings| {
        let mut config = kvs_client_config_default();
        config.use_control_plane = true;
        config.channel_name = strings.add("cam");
        config.access_key_id = strings.add(KEY);
        config.secret_access_key = strings.add(SECRET);
        config.create_channel = true;
        config
    };
    for bad in ["", "two\r\nlines", "tab\there", &"u".repeat(257)] {
        let mut config = base(&mut strings);
        config.user_agent_suffix = strings.add(bad);
        assert_eq!(new_client(&config).err(), Some(KVS_ERR_INVALID_CONFIG), "{bad:?}");
    }
    let mut config = base(&mut strings);
    config.user_agent_suffix = strings.add(&"u".repeat(256));
    kvs_client_free(new_client(&config).expect("a 256-character suffix"));

    let tag =
        |strings: &mut Strings, key: &str, value: &str| kvs_tag { key: strings.add(key), value: strings.add(value) };
    let good: Vec<kvs_tag> = (0..50).map(|i| tag(&mut strings, &format!("k{i}"), "v")).collect();
    let cases: Vec<(&str, Vec<kvs_tag>, kvs_result)> = vec![
        ("51 tags", (0..51).map(|i| tag(&mut strings, &format!("k{i}"), "")).collect(), KVS_ERR_INVALID_CONFIG),
        ("empty key", vec![tag(&mut strings, "", "v")], KVS_ERR_INVALID_CONFIG),
        ("129-character key", vec![tag(&mut strings, &"k".repeat(129), "v")], KVS_ERR_INVALID_CONFIG),
        ("257-character value", vec![tag(&mut strings, "k", &"v".repeat(257))], KVS_ERR_INVALID_CONFIG),
        ("a character outside the pattern", vec![tag(&mut strings, "k", "a;b")], KVS_ERR_INVALID_CONFIG),
        ("a key twice", vec![tag(&mut strings, "k", "1"), tag(&mut strings, "k", "2")], KVS_ERR_INVALID_CONFIG),
        ("a NULL value", vec![kvs_tag { key: strings.add("k"), value: ptr::null() }], KVS_ERR_NULL_PARAMETER),
        ("50 tags", good, KVS_OK),
    ];
    for (name, tags, expected) in &cases {
        let mut config = base(&mut strings);
        config.tags = tags.as_ptr();
        config.tag_count = tags.len();
        let result = new_client(&config);
        assert_eq!(result.err().unwrap_or(KVS_OK), *expected, "{name}: {}", last_error());
        if let Ok(client) = result {
            kvs_client_free(client);
        }
    }
    let mut config = base(&mut strings);
    config.tag_count = 1;
    assert_eq!(new_client(&config).err(), Some(KVS_ERR_NULL_PARAMETER));
    let mut config = base(&mut strings);
    config.create_channel = false;
    let one = [tag(&mut strings, "k", "v")];
    config.tags = one.as_ptr();
    config.tag_count = 1;
    assert_eq!(new_client(&config).err(), Some(KVS_ERR_INVALID_CONFIG));
}

#[test]
fn the_sink_functions_check_their_arguments() {
    let url = c"wss://h/?a=b";
    assert_eq!(kvs_sign_sink_set_url(ptr::null_mut(), url.as_ptr()), KVS_ERR_NULL_PARAMETER);
    assert_eq!(kvs_sign_sink_add_header(ptr::null_mut(), url.as_ptr(), url.as_ptr()), KVS_ERR_NULL_PARAMETER);
}
