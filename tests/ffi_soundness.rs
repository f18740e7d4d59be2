//! The C boundary's promises under stress, called from Rust as C would call it,
//! against the emulator on loopback: a client freed while its callbacks send
//! through it, free with a long backlog, back-pressure instead of growth,
//! values from C checked before they become Rust enums, cancelled connects.

mod common;

use common::{EmulatorThread, wait_for};
use kvs_signaling::emulator::EmulatorConfig;
use kvs_signaling::ffi::kvs_result::*;
use kvs_signaling::ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::net::TcpListener;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one client's callbacks saw. Leaked on purpose: callbacks that wrongly
/// run after `free_userdata` must find it still there to report themselves.
#[derive(Default)]
struct Probe {
    /// The client, for callbacks that answer through it.
    client: AtomicUsize,
    /// Milliseconds each on_message sleeps.
    slow_ms: u64,
    /// Answer each message through the client from the callback.
    answer: bool,
    messages: AtomicUsize,
    candidates: Mutex<Vec<String>>,
    /// Result codes of sends made from callbacks.
    callback_sends: Mutex<Vec<u32>>,
    freed: AtomicUsize,
    freed_on: Mutex<Option<std::thread::ThreadId>>,
    callback_after_free: AtomicBool,
}

fn probe(userdata: *mut c_void) -> &'static Probe {
    unsafe { &*(userdata as *const Probe) }
}

unsafe extern "C" fn on_message(userdata: *mut c_void, message: *const kvs_message) {
    let p = probe(userdata);
    if p.freed.load(Ordering::SeqCst) > 0 {
        p.callback_after_free.store(true, Ordering::SeqCst);
    }
    let m = unsafe { &*message };
    p.messages.fetch_add(1, Ordering::SeqCst);
    if !m.candidate.is_null() {
        let line = unsafe { CStr::from_ptr(m.candidate) }.to_string_lossy().into_owned();
        p.candidates.lock().unwrap().push(line);
    }
    let client = p.client.load(Ordering::SeqCst) as *const kvs_client;
    if p.answer && !m.sender_client_id.is_null() {
        let candidate = kvs_ice_candidate {
            candidate: c"candidate:9 1 udp 1 192.0.2.9 9 typ host".as_ptr(),
            sdp_mid: ptr::null(),
            sdp_mline_index: 0,
            username_fragment: ptr::null(),
        };
        let rc = kvs_send_ice_candidate(
            client,
            m.sender_client_id,
            &candidate,
            ptr::null(),
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        );
        p.callback_sends.lock().unwrap().push(rc as u32);
        let mut metrics = std::mem::MaybeUninit::<kvs_client_metrics>::uninit();
        let rc = kvs_client_get_metrics(client, metrics.as_mut_ptr());
        p.callback_sends.lock().unwrap().push(rc as u32);
    }
    if p.slow_ms > 0 {
        std::thread::sleep(Duration::from_millis(p.slow_ms));
    }
}

unsafe extern "C" fn free_probe(userdata: *mut c_void) {
    let p = probe(userdata);
    *p.freed_on.lock().unwrap() = Some(std::thread::current().id());
    p.freed.fetch_add(1, Ordering::SeqCst);
}

fn leak(probe: Probe) -> &'static Probe {
    Box::leak(Box::new(probe))
}

struct Made {
    client: *mut kvs_client,
    probe: &'static Probe,
}

fn make(
    emulator: &EmulatorThread,
    viewer: Option<&str>,
    probe: &'static Probe,
    edit: impl Fn(&mut kvs_client_config),
) -> Made {
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let id = viewer.map(|v| CString::new(v).unwrap());
    let mut config = kvs_client_config_default();
    config.role = if viewer.is_some() { kvs_role::Viewer as u32 } else { kvs_role::Master as u32 };
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.client_id = id.as_ref().map_or(ptr::null(), |i| i.as_ptr());
    config.ice_per_second = KVS_UNPACED;
    config.sdp_per_second = KVS_UNPACED;
    config.send_queue_capacity = 20_000;
    config.on_message = Some(on_message);
    config.userdata = (probe as *const Probe).cast_mut().cast();
    config.free_userdata = Some(free_probe);
    edit(&mut config);
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());
    probe.client.store(client as usize, Ordering::SeqCst);
    Made { client, probe }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(kvs_last_error_message()) }.to_string_lossy().into_owned()
}

fn send_candidate(client: *const kvs_client, recipient: *const c_char, n: usize) -> kvs_result {
    let line = CString::new(format!("candidate:{n} 1 udp 2122260223 192.0.2.1 {} typ host", 10_000 + n)).unwrap();
    let candidate = kvs_ice_candidate {
        candidate: line.as_ptr(),
        sdp_mid: c"0".as_ptr(),
        sdp_mline_index: 0,
        username_fragment: ptr::null(),
    };
    kvs_send_ice_candidate(client, recipient, &candidate, ptr::null(), ptr::null_mut(), 0, ptr::null_mut())
}

fn unlimited_emulator() -> EmulatorThread {
    EmulatorThread::start_with(EmulatorConfig { quotas: false, ..EmulatorConfig::default() })
}

/// A viewer sends `count` candidates from its own thread; returns when all
/// were accepted.
fn flood(viewer: *mut kvs_client, count: usize) -> std::thread::JoinHandle<()> {
    let viewer = viewer as usize;
    std::thread::spawn(move || {
        for n in 0..count {
            loop {
                match send_candidate(viewer as *const kvs_client, ptr::null(), n) {
                    KVS_OK => break,
                    KVS_ERR_QUEUE_FULL => std::thread::sleep(Duration::from_millis(1)),
                    other => panic!("viewer send {n}: {other:?}"),
                }
            }
        }
    })
}

#[test]
fn a_client_freed_while_its_callbacks_send_through_it_stays_sound() {
    let emulator = unlimited_emulator();
    let allowed = [KVS_OK as u32, KVS_ERR_CLOSED as u32, KVS_ERR_NOT_CONNECTED as u32, KVS_ERR_QUEUE_FULL as u32];
    for round in 0..40 {
        let master = make(&emulator, None, leak(Probe { answer: true, ..Probe::default() }), |_| {});
        assert_eq!(kvs_client_connect(master.client), KVS_OK, "{}", last_error());
        let viewer_probe = leak(Probe::default());
        let viewer = make(&emulator, Some(&format!("v{round}")), viewer_probe, |_| {});
        assert_eq!(kvs_client_connect(viewer.client), KVS_OK, "{}", last_error());
        let sender = flood(viewer.client, 400);
        // Free mid-flood, while the master's callbacks answer through it.
        wait_for("the master's callbacks", Duration::from_secs(5), || {
            (master.probe.messages.load(Ordering::SeqCst) > 5 + round % 7).then_some(())
        });
        let started = Instant::now();
        assert_eq!(kvs_client_free(master.client), KVS_OK);
        assert!(started.elapsed() < Duration::from_secs(4), "free took {:?}", started.elapsed());
        let p = master.probe;
        assert_eq!(p.freed.load(Ordering::SeqCst), 1, "free_userdata exactly once");
        assert_eq!(
            *p.freed_on.lock().unwrap(),
            Some(std::thread::current().id()),
            "free_userdata on the freeing thread"
        );
        let seen = p.messages.load(Ordering::SeqCst);
        sender.join().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(p.messages.load(Ordering::SeqCst), seen, "a callback ran after kvs_client_free returned");
        assert!(!p.callback_after_free.load(Ordering::SeqCst), "a callback ran after free_userdata");
        let codes = p.callback_sends.lock().unwrap().clone();
        assert!(codes.iter().all(|c| allowed.contains(c)), "codes from callbacks during free: {codes:?}");
        assert_eq!(kvs_client_free(viewer.client), KVS_OK);
    }
}

#[test]
fn free_returns_promptly_whatever_the_backlog() {
    let emulator = unlimited_emulator();
    let master = make(&emulator, None, leak(Probe { slow_ms: 10, ..Probe::default() }), |c| {
        c.callback_backlog_messages = 10_000;
        c.callback_backlog_bytes = 64 << 20;
    });
    assert_eq!(kvs_client_connect(master.client), KVS_OK, "{}", last_error());
    let viewer = make(&emulator, Some("v-backlog"), leak(Probe::default()), |_| {});
    assert_eq!(kvs_client_connect(viewer.client), KVS_OK, "{}", last_error());
    flood(viewer.client, 3000).join().unwrap();
    // 3,000 callbacks of 10 ms: a 30 s backlog once they are all queued.
    let mut metrics = std::mem::MaybeUninit::<kvs_client_metrics>::uninit();
    wait_for("the backlog", Duration::from_secs(10), || {
        assert_eq!(kvs_client_get_metrics(master.client, metrics.as_mut_ptr()), KVS_OK);
        (unsafe { metrics.assume_init_ref() }.callbacks_queued > 2000).then_some(())
    });
    let started = Instant::now();
    assert_eq!(kvs_client_free(master.client), KVS_OK);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "free waited {took:?} for the backlog");
    let ran = master.probe.messages.load(Ordering::SeqCst);
    assert!(ran < 1000, "{ran} callbacks ran: the backlog was not discarded");
    assert_eq!(master.probe.freed.load(Ordering::SeqCst), 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(master.probe.messages.load(Ordering::SeqCst), ran, "callbacks ran after free");
    assert_eq!(kvs_client_free(viewer.client), KVS_OK);
}

#[test]
fn a_full_callback_backlog_pauses_reading_and_drops_nothing() {
    const LIMIT: u32 = 16;
    const COUNT: usize = 600;
    let emulator = unlimited_emulator();
    let master = make(&emulator, None, leak(Probe { slow_ms: 1, ..Probe::default() }), |c| {
        c.callback_backlog_messages = LIMIT;
    });
    assert_eq!(kvs_client_connect(master.client), KVS_OK, "{}", last_error());
    let viewer = make(&emulator, Some("v-pressure"), leak(Probe::default()), |_| {});
    assert_eq!(kvs_client_connect(viewer.client), KVS_OK, "{}", last_error());
    let sender = flood(viewer.client, COUNT);
    let mut most = 0;
    let mut metrics = std::mem::MaybeUninit::<kvs_client_metrics>::uninit();
    let deadline = Instant::now() + Duration::from_secs(30);
    while master.probe.candidates.lock().unwrap().len() < COUNT {
        assert!(Instant::now() < deadline, "only {} of {COUNT} arrived", master.probe.candidates.lock().unwrap().len());
        assert_eq!(kvs_client_get_metrics(master.client, metrics.as_mut_ptr()), KVS_OK);
        most = most.max(unsafe { metrics.assume_init_ref() }.callbacks_queued);
        std::thread::sleep(Duration::from_millis(1));
    }
    sender.join().unwrap();
    let lines = master.probe.candidates.lock().unwrap().clone();
    for (n, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("candidate:{n} ")), "candidate {n} out of order or missing: {line}");
    }
    assert_eq!(kvs_client_get_metrics(master.client, metrics.as_mut_ptr()), KVS_OK);
    let m = unsafe { metrics.assume_init_ref() };
    assert!(m.backpressure_pauses > 0, "the client never paused reading");
    // One frame read after the last check before the pause: at most one more.
    assert!(most <= u64::from(LIMIT) + 1, "{most} callbacks queued with a limit of {LIMIT}");
    assert_eq!(kvs_client_free(master.client), KVS_OK);
    assert_eq!(kvs_client_free(viewer.client), KVS_OK);
}

static GARBAGE_RESULT: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn credentials_returning_garbage(_userdata: *mut c_void, _sink: *mut kvs_credentials_sink) -> u32 {
    GARBAGE_RESULT.fetch_add(1, Ordering::SeqCst);
    7777
}

#[test]
fn a_credentials_callback_returning_no_known_code_is_a_failure() {
    let emulator = EmulatorThread::start();
    let control_plane = CString::new(emulator.endpoint.replacen("ws://", "http://", 1)).unwrap();
    let mut config = kvs_client_config_default();
    config.role = kvs_role::Master as u32;
    config.use_control_plane = true;
    config.channel_name = c"test-channel".as_ptr();
    config.control_plane_url = control_plane.as_ptr();
    config.skip_ice_servers = true;
    config.credentials_callback = Some(credentials_returning_garbage);
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_connect(client), KVS_ERR_CREDENTIALS);
    assert!(last_error().contains("not a kvs_result"), "{}", last_error());
    assert!(GARBAGE_RESULT.load(Ordering::SeqCst) >= 1);
    assert_eq!(kvs_client_free(client), KVS_OK);
}

#[test]
fn a_connect_stopped_by_disconnect_is_cancelled() {
    // A listener that accepts TCP and never answers the upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = CString::new(format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    let mut config = kvs_client_config_default();
    config.channel_arn = c"arn:aws:kinesisvideo:us-west-2:123456789012:channel/c/1".as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.connect_timeout_ms = 20_000;
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());
    let shared = client as usize;
    let outcome = Arc::new(Mutex::new(None));
    let connecting = std::thread::spawn({
        let outcome = outcome.clone();
        move || {
            let rc = kvs_client_connect(shared as *const kvs_client);
            *outcome.lock().unwrap() = Some((rc, last_error()));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(kvs_client_disconnect(client), KVS_OK);
    connecting.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let (rc, text) = outcome.lock().unwrap().clone().unwrap();
    assert_eq!(rc, KVS_ERR_CANCELLED, "{text}");
    assert_eq!(kvs_client_free(client), KVS_OK);
    drop(listener);
}

#[test]
fn buffers_may_be_null_to_ask_for_the_size() {
    let mut len = 0usize;
    assert_eq!(kvs_stun_url(c"us-west-2".as_ptr(), false, false, ptr::null_mut(), 0, &mut len), KVS_OK);
    assert_eq!(len, "stun:stun.kinesisvideo.us-west-2.amazonaws.com:443".len());
    assert_eq!(
        kvs_stun_url(c"us-west-2".as_ptr(), false, false, ptr::null_mut(), 0, ptr::null_mut()),
        KVS_ERR_NULL_PARAMETER
    );
    let mut buf = vec![0 as c_char; len + 1];
    assert_eq!(kvs_stun_url(c"us-west-2".as_ptr(), false, false, buf.as_mut_ptr(), buf.len(), ptr::null_mut()), KVS_OK);
}

#[test]
fn the_ca_bundle_serves_a_direct_wss_endpoint_and_config_errors_come_from_new() {
    let dir = std::env::temp_dir().join(format!("kvs-ffi-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let emulator = EmulatorThread::start_with(EmulatorConfig {
        tls: Some(kvs_signaling::emulator::TlsSetting::Generate { ca_out: Some(ca.clone()) }),
        ..EmulatorConfig::default()
    });
    assert!(emulator.endpoint.starts_with("wss://"), "{}", emulator.endpoint);
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let ca_path = CString::new(ca.to_str().unwrap()).unwrap();
    let garbage_path = CString::new(garbage.to_str().unwrap()).unwrap();
    let attempt = |endpoint: &CString, bundle: Option<&CString>| {
        let mut config = kvs_client_config_default();
        config.channel_arn = arn.as_ptr();
        config.endpoint = endpoint.as_ptr();
        config.ca_bundle_path = bundle.map_or(ptr::null(), |b| b.as_ptr());
        let mut client = ptr::null_mut();
        let made = kvs_client_new(&config, &mut client);
        if made != KVS_OK {
            return (made, None, last_error());
        }
        let connected = kvs_client_connect(client);
        let text = last_error();
        assert_eq!(kvs_client_free(client), KVS_OK);
        (made, Some(connected), text)
    };
    assert_eq!(attempt(&endpoint, Some(&ca_path)).1, Some(KVS_OK), "the private CA is trusted for wss://");
    let (_, connected, text) = attempt(&endpoint, None);
    assert_eq!(connected, Some(KVS_ERR_TLS), "without the bundle the emulator's certificate is refused: {text}");
    let (made, _, text) = attempt(&endpoint, Some(&garbage_path));
    assert_eq!(made, KVS_ERR_INVALID_CONFIG, "a garbage bundle is refused by kvs_client_new: {text}");
    let (made, _, text) = attempt(&CString::new("ws://").unwrap(), None);
    assert_eq!(made, KVS_ERR_INVALID_CONFIG, "{text}");
    assert!(text.contains("\"ws://\"") && text.contains("no host"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A binary built against an older header: a config whose `struct_size` ends
/// before the newer fields (which hold garbage the library must not read), a
/// metrics struct and ICE server entries smaller than today's, with canaries
/// after them that the library must not touch.
#[test]
fn structs_from_an_older_header_are_read_and_written_only_as_far_as_their_size() {
    let emulator = EmulatorThread::start();
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let old_config_size = std::mem::offset_of!(kvs_client_config, callback_backlog_messages);
    let mut config = kvs_client_config_default();
    assert_eq!(config.struct_size, size_of::<kvs_client_config>());
    // Garbage where the newer fields are: read, these would be refused.
    let bytes = (&mut config as *mut kvs_client_config).cast::<u8>();
    unsafe { ptr::write_bytes(bytes.add(old_config_size), 0xA5, size_of::<kvs_client_config>() - old_config_size) };
    assert_eq!(kvs_client_config_init(&mut config, old_config_size), KVS_OK);
    assert_eq!(config.struct_size, old_config_size);
    assert_eq!(config.max_inbound_frame_len, 0xA5A5_A5A5, "init wrote beyond the size it was given");
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_connect(client), KVS_OK, "{}", last_error());

    // Metrics of the first versioned layout, then canaries.
    let old_metrics_size = std::mem::offset_of!(kvs_client_metrics, backpressure_pauses);
    let mut buffer = vec![0xEEu8; size_of::<kvs_client_metrics>() + 16];
    let out = buffer.as_mut_ptr().cast::<kvs_client_metrics>();
    assert_eq!(kvs_client_get_metrics_sized(client, out, old_metrics_size), KVS_OK);
    assert!(buffer[old_metrics_size..].iter().all(|b| *b == 0xEE), "metrics written beyond the caller's size");
    let state = u32::from_ne_bytes(buffer[..4].try_into().unwrap());
    assert_eq!(state, kvs_state::Connected as u32);
    assert_eq!(kvs_client_get_metrics_sized(client, out, 8), KVS_ERR_INVALID_ARGUMENT);

    // A struct_size of 0 (not initialised) is refused without reading further.
    let mut zeroed = kvs_client_config_default();
    zeroed.struct_size = 0;
    let mut other = ptr::null_mut();
    assert_eq!(kvs_client_new(&zeroed, &mut other), KVS_ERR_INVALID_CONFIG);
    assert!(last_error().contains("struct_size"), "{}", last_error());
    assert!(other.is_null());
    // A size that ends inside a field (half a function pointer) is refused.
    let mut torn = kvs_client_config_default();
    torn.channel_arn = arn.as_ptr();
    torn.endpoint = endpoint.as_ptr();
    torn.struct_size = std::mem::offset_of!(kvs_client_config, signer_callback) + 4;
    assert_eq!(kvs_client_new(&torn, &mut other), KVS_ERR_INVALID_CONFIG);
    assert!(last_error().contains("struct_size"), "{}", last_error());
    // A bool byte other than 0 or 1 reads as C reads it: non-zero is true
    // (use_control_plane true needs no endpoint; false would refuse the config).
    let mut odd = kvs_client_config_default();
    odd.channel_name = c"cam-1".as_ptr();
    odd.control_plane_url = c"http://127.0.0.1:9".as_ptr();
    odd.access_key_id = c"AKIDEXAMPLE".as_ptr();
    odd.secret_access_key = c"secret".as_ptr();
    let flag = std::mem::offset_of!(kvs_client_config, use_control_plane);
    unsafe { (&mut odd as *mut kvs_client_config).cast::<u8>().add(flag).write(2) };
    assert_eq!(kvs_client_new(&odd, &mut other), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_free(other), KVS_OK);
    assert_eq!(kvs_client_free(client), KVS_OK);
    assert_eq!(kvs_version_number() >> 16, env!("CARGO_PKG_VERSION_MAJOR").parse::<u32>().unwrap());
}
