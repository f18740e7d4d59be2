//! A signer callback slower than the library's wait for it (its own process:
//! the hung callback holds the dispatcher thread every client shares). At
//! most `MAX_PENDING_REQUESTS` (4) requests wait for it; requests the
//! library stopped waiting for are dropped without asking the callback.

mod common;

use common::{EmulatorThread, wait_for};
use kvs_signaling::aws::Credentials;
use kvs_signaling::aws::sigv4::presign_wss_url;
use kvs_signaling::emulator::{EmulatorConfig, TlsSetting};
use kvs_signaling::ffi::kvs_result::*;
use kvs_signaling::ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY: &str = "AKIDEXAMPLESIGNERBUSY";
const SECRET: &str = "ffi/signer/busy/EXAMPLE";

/// Log lines of the library (warnings), from any thread.
static LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" fn on_log(_: *mut c_void, _: u32, _: *const c_char, message: *const c_char, _: usize) {
    LOG.lock().unwrap().push(text(message));
}

/// Calls of the callback, and whether it hangs (until cleared).
static CALLS: AtomicUsize = AtomicUsize::new(0);
static HANG: AtomicBool = AtomicBool::new(true);

fn text(ptr: *const c_char) -> String {
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

unsafe extern "C" fn slow_backend(_: *mut c_void, request: *const kvs_sign_request, sink: *mut kvs_sign_sink) -> u32 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    while HANG.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let request = unsafe { &*request };
    let time = UNIX_EPOCH + Duration::from_millis(request.time_unix_ms);
    let arn = text(request.channel_arn);
    let credentials = Credentials::new(KEY, SECRET, None);
    let url =
        presign_wss_url(&text(request.url), &[("X-Amz-ChannelARN", &arn)], &credentials, &text(request.region), time)
            .unwrap();
    let url = CString::new(url).unwrap();
    kvs_sign_sink_set_url(sink, url.as_ptr()) as u32
}

#[test]
fn a_hung_signer_callback_holds_a_bounded_number_of_requests() {
    let ca = std::env::temp_dir().join(format!("kvs-signer-busy-{}-{:?}.pem", std::process::id(), SystemTime::now()));
    let emulator = EmulatorThread::start_with(EmulatorConfig {
        auth: Some(vec![(KEY.into(), SECRET.into())]),
        tls: Some(TlsSetting::Generate { ca_out: Some(ca) }),
        ..EmulatorConfig::default()
    });
    let ca = emulator.with(|e| e.ca_path().unwrap().to_string_lossy().into_owned());
    let (arn, endpoint, ca) = (
        CString::new(emulator.arn.clone()).unwrap(),
        CString::new(emulator.endpoint.clone()).unwrap(),
        CString::new(ca).unwrap(),
    );
    let mut config = kvs_client_config_default();
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.ca_bundle_path = ca.as_ptr();
    config.signer_callback = Some(slow_backend);
    config.signer_timeout_ms = 100;
    config.backoff_initial_ms = 10;
    config.backoff_max_ms = 40;
    assert_eq!(kvs_set_log_callback(kvs_log_level::Warn as u32, Some(on_log), ptr::null_mut(), None), KVS_OK);
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK);
    assert_eq!(kvs_client_start(client), KVS_OK);

    // The callback hangs in its first call while attempt after attempt times
    // out (100 ms each, then up to 40 ms of backoff): a dozen in 2 s.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: a plain C struct of integers; all zero is a valid value.
    let mut metrics: kvs_client_metrics = unsafe { std::mem::zeroed() };
    assert_eq!(kvs_client_get_metrics(client, &mut metrics), KVS_OK);
    assert!(metrics.connect_failures >= 8, "{} attempts failed", metrics.connect_failures);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "only the hung call started");
    // The hung request and three queued ones hold the four places: later
    // attempts fail at once instead of queueing.
    let busy = LOG.lock().unwrap().iter().filter(|line| line.contains("has not started on the 4 requests")).count();
    assert!(busy >= 1, "no attempt was refused for want of a place: {:?}", LOG.lock().unwrap());

    // Released: the requests queued behind it were all given up on, so the
    // callback is asked again only for attempts still waiting; the client connects.
    HANG.store(false, Ordering::SeqCst);
    wait_for("the client to connect", Duration::from_secs(10), || {
        (kvs_client_state(client) == kvs_state::Connected as u32).then_some(())
    });
    let calls = CALLS.load(Ordering::SeqCst);
    assert!(calls <= 3, "{calls} calls: requests given up on reached the callback");
    assert_eq!(kvs_client_free(client), KVS_OK);
}
