//! The C ABI, called from Rust exactly as C would call it, against the emulator
//! on loopback. The emulator runs on its own runtime thread so that these tests
//! call the blocking entry points from plain threads, as an application does.

mod common;

use common::{EmulatorThread, wait_for};
use kvs_signaling::ffi::kvs_result::{self, *};
use kvs_signaling::ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// (message type, sender, SDP type, SDP text or candidate line)
type SeenMessage = (u32, Option<String>, Option<String>, Option<String>);
/// (origin, correlation id, error type, status code)
type SeenStatus = (u32, String, Option<String>, u32);
type ConfigEdit = Box<dyn Fn(&mut kvs_client_config)>;

/// What a client's callbacks saw; owned by the library through `userdata`.
struct Recorder {
    messages: Mutex<Vec<SeenMessage>>,
    statuses: Mutex<Vec<SeenStatus>>,
    states: Mutex<Vec<u32>>,
    callback_threads: Mutex<Vec<String>>,
    /// Set by the test: when the master gets an offer it answers from the callback
    /// and tries the calls that must be refused there.
    answer_from_callback: bool,
    self_client: Mutex<usize>,
    refusals: Mutex<Vec<(&'static str, kvs_result)>>,
    freed: &'static AtomicUsize,
}

fn opt(ptr: *const c_char) -> Option<String> {
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
}

fn recorder<'a>(userdata: *mut c_void) -> &'a Recorder {
    unsafe { &*(userdata as *const Recorder) }
}

fn note_thread(rec: &Recorder) {
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    rec.callback_threads.lock().unwrap().push(name);
}

unsafe extern "C" fn on_message(userdata: *mut c_void, message: *const kvs_message) {
    let rec = recorder(userdata);
    note_thread(rec);
    let m = unsafe { &*message };
    let sender = opt(m.sender_client_id);
    rec.messages.lock().unwrap().push((
        m.message_type,
        sender.clone(),
        opt(m.sdp_type),
        opt(m.sdp).or(opt(m.candidate)),
    ));
    if rec.answer_from_callback && m.message_type == kvs_message_type::SdpOffer as u32 {
        let client = *rec.self_client.lock().unwrap() as *mut kvs_client;
        let recipient = CString::new(sender.unwrap()).unwrap();
        let answer = c"v=0\r\nanswer-from-callback\r\n";
        let rc = kvs_send_sdp_answer(
            client,
            recipient.as_ptr(),
            answer.as_ptr(),
            ptr::null(),
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        );
        let mut refusals = rec.refusals.lock().unwrap();
        refusals.push(("send", rc));
        refusals.push(("connect", kvs_client_connect(client)));
        refusals.push(("disconnect", kvs_client_disconnect(client)));
        refusals.push(("free", kvs_client_free(client)));
        refusals.push(("shutdown", kvs_shutdown(10)));
    }
}

unsafe extern "C" fn on_status(userdata: *mut c_void, status: *const kvs_status) {
    let rec = recorder(userdata);
    let s = unsafe { &*status };
    rec.statuses.lock().unwrap().push((s.origin, opt(s.correlation_id).unwrap(), opt(s.error_type), s.status_code));
}

unsafe extern "C" fn on_state(userdata: *mut c_void, state: u32, reason: *const c_char) {
    let rec = recorder(userdata);
    note_thread(rec);
    assert!(!reason.is_null());
    rec.states.lock().unwrap().push(state);
}

unsafe extern "C" fn free_recorder(userdata: *mut c_void) {
    let rec = unsafe { Box::from_raw(userdata as *mut Recorder) };
    // On the thread that frees the client (or whose kvs_client_new failed),
    // never on the dispatcher.
    assert_ne!(std::thread::current().name(), Some("kvs-callbacks"));
    rec.freed.fetch_add(1, Ordering::SeqCst);
}

struct TestClient {
    client: *mut kvs_client,
    rec: *const Recorder,
}

impl TestClient {
    fn rec(&self) -> &Recorder {
        unsafe { &*self.rec }
    }
}

fn leak_counter() -> &'static AtomicUsize {
    Box::leak(Box::new(AtomicUsize::new(0)))
}

fn new_client(
    emulator: &EmulatorThread,
    role: u32,
    client_id: Option<&str>,
    answer: bool,
    freed: &'static AtomicUsize,
) -> TestClient {
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let id = client_id.map(|i| CString::new(i).unwrap());
    let rec = Box::into_raw(Box::new(Recorder {
        messages: Mutex::default(),
        statuses: Mutex::default(),
        states: Mutex::default(),
        callback_threads: Mutex::default(),
        answer_from_callback: answer,
        self_client: Mutex::default(),
        refusals: Mutex::default(),
        freed,
    }));
    let mut config = kvs_client_config_default();
    config.role = role;
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.client_id = id.as_ref().map_or(ptr::null(), |i| i.as_ptr());
    config.on_message = Some(on_message);
    config.on_status = Some(on_status);
    config.on_state = Some(on_state);
    config.userdata = rec.cast();
    config.free_userdata = Some(free_recorder);
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());
    *unsafe { &*rec }.self_client.lock().unwrap() = client as usize;
    TestClient { client, rec }
}

fn last_error() -> String {
    opt(kvs_last_error_message()).unwrap_or_default()
}

#[test]
fn c_abi_exchange_with_callbacks_on_the_dispatcher() {
    let emulator = EmulatorThread::start();
    let (master_freed, viewer_freed) = (leak_counter(), leak_counter());
    let master = new_client(&emulator, kvs_role::Master as u32, None, true, master_freed);
    let viewer = new_client(&emulator, kvs_role::Viewer as u32, Some("c-viewer"), false, viewer_freed);
    assert_eq!(kvs_client_connect(master.client), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_connect(viewer.client), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_state(viewer.client), kvs_state::Connected as u32);

    let mut id_buf = [0 as c_char; KVS_CORRELATION_ID_CAPACITY];
    let mut id_len = 0usize;
    let rc = kvs_send_sdp_offer(
        viewer.client,
        ptr::null(),
        c"v=0\r\noffer\r\n".as_ptr(),
        ptr::null(),
        id_buf.as_mut_ptr(),
        id_buf.len(),
        &mut id_len,
    );
    assert_eq!(rc, KVS_OK, "{}", last_error());
    let id = unsafe { CStr::from_ptr(id_buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(id.len(), id_len);
    assert!(id_len > 0);

    wait_for("the answer", WAIT, || (!viewer.rec().messages.lock().unwrap().is_empty()).then_some(()));
    let answer = viewer.rec().messages.lock().unwrap()[0].clone();
    assert_eq!(
        answer,
        (
            kvs_message_type::SdpAnswer as u32,
            None,
            Some("answer".into()),
            Some("v=0\r\nanswer-from-callback\r\n".into())
        )
    );
    let offer = master.rec().messages.lock().unwrap()[0].clone();
    assert_eq!(
        offer,
        (
            kvs_message_type::SdpOffer as u32,
            Some("c-viewer".into()),
            Some("offer".into()),
            Some("v=0\r\noffer\r\n".into())
        )
    );
    let refusals = master.rec().refusals.lock().unwrap().clone();
    assert_eq!(
        refusals,
        [
            ("send", KVS_OK),
            ("connect", KVS_ERR_WOULD_DEADLOCK),
            ("disconnect", KVS_ERR_WOULD_DEADLOCK),
            ("free", KVS_ERR_IN_CALLBACK),
            ("shutdown", KVS_ERR_WOULD_DEADLOCK),
        ]
    );

    let candidate = kvs_ice_candidate {
        candidate: c"candidate:7 1 udp 1 127.0.0.1 9 typ host".as_ptr(),
        sdp_mid: c"0".as_ptr(),
        sdp_mline_index: 0,
        username_fragment: ptr::null(),
    };
    let rc = kvs_send_ice_candidate(
        viewer.client,
        ptr::null(),
        &candidate,
        c"my-ice-1".as_ptr(),
        ptr::null_mut(),
        0,
        ptr::null_mut(),
    );
    assert_eq!(rc, KVS_OK, "{}", last_error());
    wait_for("the candidate", WAIT, || (master.rec().messages.lock().unwrap().len() == 2).then_some(()));
    let got = master.rec().messages.lock().unwrap()[1].clone();
    assert_eq!(got.0, kvs_message_type::IceCandidate as u32);
    assert_eq!(got.3.as_deref(), Some("candidate:7 1 udp 1 127.0.0.1 9 typ host"));

    for thread in
        master.rec().callback_threads.lock().unwrap().iter().chain(viewer.rec().callback_threads.lock().unwrap().iter())
    {
        assert_eq!(thread, "kvs-callbacks");
    }
    assert!(master.rec().statuses.lock().unwrap().is_empty(), "no send failed");
    assert!(viewer.rec().statuses.lock().unwrap().is_empty(), "no send failed");
    assert_eq!(kvs_client_free(viewer.client), KVS_OK);
    assert_eq!(kvs_client_free(master.client), KVS_OK);
    wait_for("free_userdata", WAIT, || {
        (master_freed.load(Ordering::SeqCst) == 1 && viewer_freed.load(Ordering::SeqCst) == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(master_freed.load(Ordering::SeqCst), 1);
    assert_eq!(viewer_freed.load(Ordering::SeqCst), 1);
}

#[test]
fn states_follow_connect_and_disconnect() {
    let emulator = EmulatorThread::start();
    let freed = leak_counter();
    let viewer = new_client(&emulator, kvs_role::Viewer as u32, Some("states"), false, freed);
    assert_eq!(kvs_client_connect(viewer.client), KVS_OK);
    assert_eq!(kvs_client_connect(viewer.client), KVS_ERR_ALREADY_CONNECTED);
    assert_eq!(kvs_client_disconnect(viewer.client), KVS_OK);
    assert_eq!(kvs_client_disconnect(viewer.client), KVS_OK);
    let rc = kvs_send_sdp_offer(
        viewer.client,
        ptr::null(),
        c"v=0".as_ptr(),
        ptr::null(),
        ptr::null_mut(),
        0,
        ptr::null_mut(),
    );
    assert_eq!(rc, KVS_ERR_NOT_CONNECTED);
    wait_for("four states", WAIT, || (viewer.rec().states.lock().unwrap().len() == 4).then_some(()));
    let expected: Vec<u32> = [kvs_state::Connecting, kvs_state::Connected, kvs_state::Closing, kvs_state::Disconnected]
        .into_iter()
        .map(|s| s as u32)
        .collect();
    assert_eq!(*viewer.rec().states.lock().unwrap(), expected);
    assert_eq!(kvs_client_free(viewer.client), KVS_OK);
    wait_for("free_userdata", WAIT, || (freed.load(Ordering::SeqCst) == 1).then_some(()));
}

fn send_offer(
    client: *const kvs_client,
    recipient: *const c_char,
    sdp: *const c_char,
    correlation: *const c_char,
) -> kvs_result {
    kvs_send_sdp_offer(client, recipient, sdp, correlation, ptr::null_mut(), 0, ptr::null_mut())
}

#[test]
fn bad_input_gets_a_distinct_code_and_text_and_sends_nothing() {
    let emulator = EmulatorThread::start();
    let freed = leak_counter();
    let master = new_client(&emulator, kvs_role::Master as u32, None, false, freed);
    let viewer = new_client(&emulator, kvs_role::Viewer as u32, Some("bad-input-viewer"), false, leak_counter());
    let sdp = c"v=0".as_ptr();
    assert_eq!(send_offer(master.client, c"v".as_ptr(), sdp, ptr::null()), KVS_ERR_NOT_CONNECTED, "before connect");
    assert_eq!(kvs_client_connect(master.client), KVS_OK);
    assert_eq!(kvs_client_connect(viewer.client), KVS_OK);
    let before = emulator.stats();

    let long_id = CString::new("x".repeat(257)).unwrap();
    let non_utf8 = CString::new(vec![0xffu8, 0xfe]).unwrap();
    let big_sdp = CString::new("a".repeat(10_001)).unwrap();
    let cases: Vec<(&str, kvs_result)> = vec![
        ("null client", send_offer(ptr::null(), c"v".as_ptr(), sdp, ptr::null())),
        ("null sdp", send_offer(master.client, c"v".as_ptr(), ptr::null(), ptr::null())),
        ("empty sdp", send_offer(master.client, c"v".as_ptr(), c"".as_ptr(), ptr::null())),
        ("huge sdp", send_offer(master.client, c"v".as_ptr(), big_sdp.as_ptr(), ptr::null())),
        (
            "sdp too large once encoded",
            send_offer(master.client, c"v".as_ptr(), CString::new("a".repeat(8000)).unwrap().as_ptr(), ptr::null()),
        ),
        ("non-utf8 sdp", send_offer(master.client, c"v".as_ptr(), non_utf8.as_ptr(), ptr::null())),
        ("non-utf8 recipient", send_offer(master.client, non_utf8.as_ptr(), sdp, ptr::null())),
        ("master without recipient", send_offer(master.client, ptr::null(), sdp, ptr::null())),
        ("viewer with recipient", send_offer(viewer.client, c"m".as_ptr(), sdp, ptr::null())),
        ("empty recipient", send_offer(master.client, c"".as_ptr(), sdp, ptr::null())),
        ("long recipient", send_offer(master.client, long_id.as_ptr(), sdp, ptr::null())),
        ("recipient pattern", send_offer(master.client, c"a b".as_ptr(), sdp, ptr::null())),
        ("correlation pattern", send_offer(master.client, c"v".as_ptr(), sdp, c"a/b".as_ptr())),
        ("empty correlation", send_offer(master.client, c"v".as_ptr(), sdp, c"".as_ptr())),
        ("long correlation", send_offer(master.client, c"v".as_ptr(), sdp, long_id.as_ptr())),
        ("small id buffer", {
            let mut small = [0 as c_char; 8];
            kvs_send_sdp_offer(
                master.client,
                c"v".as_ptr(),
                sdp,
                ptr::null(),
                small.as_mut_ptr(),
                small.len(),
                ptr::null_mut(),
            )
        }),
        (
            "null candidate",
            kvs_send_ice_candidate(
                master.client,
                c"v".as_ptr(),
                ptr::null(),
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ),
        ),
        ("null candidate line", {
            let c = kvs_ice_candidate {
                candidate: ptr::null(),
                sdp_mid: ptr::null(),
                sdp_mline_index: -1,
                username_fragment: ptr::null(),
            };
            kvs_send_ice_candidate(master.client, c"v".as_ptr(), &c, ptr::null(), ptr::null_mut(), 0, ptr::null_mut())
        }),
        ("mline index too big", {
            let c = kvs_ice_candidate {
                candidate: c"candidate:1".as_ptr(),
                sdp_mid: ptr::null(),
                sdp_mline_index: 70_000,
                username_fragment: ptr::null(),
            };
            kvs_send_ice_candidate(master.client, c"v".as_ptr(), &c, ptr::null(), ptr::null_mut(), 0, ptr::null_mut())
        }),
        (
            "raw bad action",
            kvs_send_message(
                master.client,
                9,
                c"v".as_ptr(),
                b"{}".as_ptr(),
                2,
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ),
        ),
        (
            "raw empty",
            kvs_send_message(
                master.client,
                1,
                c"v".as_ptr(),
                b"{}".as_ptr(),
                0,
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ),
        ),
        (
            "raw null",
            kvs_send_message(
                master.client,
                1,
                c"v".as_ptr(),
                ptr::null(),
                2,
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ),
        ),
        (
            "raw too large",
            kvs_send_message(
                master.client,
                1,
                c"v".as_ptr(),
                [b'a'; 7600].as_ptr(),
                7600,
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ),
        ),
        ("connect null", kvs_client_connect(ptr::null())),
        ("disconnect null", kvs_client_disconnect(ptr::null())),
        ("new null config", kvs_client_new(ptr::null(), &mut ptr::null_mut())),
        ("last_error null", kvs_last_error(ptr::null_mut(), 0, ptr::null_mut())),
    ];
    let expected = [
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_PAYLOAD_EMPTY,
        KVS_ERR_PAYLOAD_TOO_LARGE,
        KVS_ERR_PAYLOAD_TOO_LARGE,
        KVS_ERR_INVALID_UTF8,
        KVS_ERR_INVALID_UTF8,
        KVS_ERR_RECIPIENT_REQUIRED,
        KVS_ERR_RECIPIENT_NOT_ALLOWED,
        KVS_ERR_ID_EMPTY,
        KVS_ERR_ID_TOO_LONG,
        KVS_ERR_ID_PATTERN,
        KVS_ERR_ID_PATTERN,
        KVS_ERR_ID_EMPTY,
        KVS_ERR_ID_TOO_LONG,
        KVS_ERR_BUFFER_TOO_SMALL,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_INVALID_ARGUMENT,
        KVS_ERR_INVALID_ARGUMENT,
        KVS_ERR_PAYLOAD_EMPTY,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_PAYLOAD_TOO_LARGE,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_NULL_PARAMETER,
        KVS_ERR_NULL_PARAMETER,
    ];
    assert_eq!(cases.len(), expected.len());
    for ((name, got), want) in cases.iter().zip(expected) {
        assert_eq!(*got, want, "{name}");
    }
    // kvs_last_error's own refusal left the previous text in place.
    assert_eq!(last_error(), "config must not be NULL");
    assert_eq!(send_offer(master.client, c"v".as_ptr(), sdp, c"a/b".as_ptr()), KVS_ERR_ID_PATTERN);
    assert!(last_error().contains("correlationId"), "{}", last_error());
    assert_eq!(send_offer(master.client, ptr::null(), sdp, ptr::null()), KVS_ERR_RECIPIENT_REQUIRED);
    assert!(last_error().contains("recipientClientId"), "{}", last_error());

    std::thread::sleep(Duration::from_millis(100));
    let after = emulator.stats();
    assert_eq!(
        after.messages_relayed + after.messages_stored,
        before.messages_relayed + before.messages_stored,
        "nothing was sent"
    );
    assert_eq!(after.frames_rejected, before.frames_rejected);

    assert_eq!(kvs_client_disconnect(master.client), KVS_OK);
    assert_eq!(send_offer(master.client, c"v".as_ptr(), sdp, ptr::null()), KVS_ERR_NOT_CONNECTED, "after disconnect");
    assert_eq!(kvs_client_free(master.client), KVS_OK);
    assert_eq!(kvs_client_free(viewer.client), KVS_OK);
    assert_eq!(kvs_client_free(ptr::null_mut()), KVS_OK);
}

static FAILED_NEW_FREED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn count_failed_new_free(_userdata: *mut c_void) {
    FAILED_NEW_FREED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn config_errors_are_named_and_consume_userdata() {
    let arn = c"arn:aws:kinesisvideo:us-west-2:123456789012:channel/x/1";
    let endpoint = c"ws://127.0.0.1:9";
    let non_utf8 = CString::new(vec![b'v', 0xff]).unwrap();
    let cases: Vec<(&str, ConfigEdit, kvs_result)> = vec![
        ("null arn", Box::new(|c| c.channel_arn = ptr::null()), KVS_ERR_NULL_PARAMETER),
        ("bad arn", Box::new(|c| c.channel_arn = c"arn:nope".as_ptr()), KVS_ERR_INVALID_CONFIG),
        ("null endpoint", Box::new(|c| c.endpoint = ptr::null()), KVS_ERR_NULL_PARAMETER),
        ("http endpoint", Box::new(|c| c.endpoint = c"http://x".as_ptr()), KVS_ERR_INVALID_CONFIG),
        ("bad role", Box::new(|c| c.role = 7), KVS_ERR_INVALID_CONFIG),
        ("viewer without id", Box::new(|c| c.role = 1), KVS_ERR_NULL_PARAMETER),
        (
            "reserved id",
            Box::new(|c| {
                c.role = 1;
                c.client_id = c"AWS_x".as_ptr()
            }),
            KVS_ERR_INVALID_CONFIG,
        ),
        (
            "non-utf8 id",
            Box::new(move |c| {
                c.role = 1;
                c.client_id = non_utf8.as_ptr()
            }),
            KVS_ERR_INVALID_UTF8,
        ),
        ("master with id", Box::new(|c| c.client_id = c"m".as_ptr()), KVS_ERR_INVALID_CONFIG),
        ("bad region", Box::new(|c| c.region = c"US West".as_ptr()), KVS_ERR_INVALID_CONFIG),
    ];
    for (i, (name, edit, want)) in cases.iter().enumerate() {
        let mut config = kvs_client_config_default();
        config.channel_arn = arn.as_ptr();
        config.endpoint = endpoint.as_ptr();
        config.free_userdata = Some(count_failed_new_free);
        edit(&mut config);
        let mut out: *mut kvs_client = ptr::null_mut();
        assert_eq!(kvs_client_new(&config, &mut out), *want, "{name}");
        assert!(out.is_null(), "{name}: output untouched");
        assert!(!last_error().is_empty(), "{name}");
        assert_eq!(FAILED_NEW_FREED.load(Ordering::SeqCst), i + 1, "{name}: free_userdata once");
    }
}

#[test]
fn result_text_version_and_last_error_buffer() {
    for code in 0..=28u32 {
        let text = opt(kvs_result_str(code)).unwrap();
        assert!(!text.is_empty() && text != "unknown result code", "{code}");
    }
    assert_eq!(opt(kvs_result_str(9999)).as_deref(), Some("unknown result code"));
    let version = opt(kvs_version()).unwrap();
    assert!(version.starts_with(&format!("kvs-signaling {}", env!("CARGO_PKG_VERSION"))), "{version}");

    assert_eq!(kvs_client_connect(ptr::null()), KVS_ERR_NULL_PARAMETER);
    let mut len = 0usize;
    let mut tiny = [0 as c_char; 4];
    assert_eq!(kvs_last_error(tiny.as_mut_ptr(), tiny.len(), &mut len), KVS_ERR_BUFFER_TOO_SMALL);
    let expected_len = len;
    assert_eq!(last_error(), "client must not be NULL", "a too-small buffer leaves the text as it was");
    let mut size_only = 0usize;
    assert_eq!(kvs_last_error(ptr::null_mut(), 0, &mut size_only), KVS_OK);
    assert!(size_only > 0);
    let mut buf = [0 as c_char; 256];
    assert_eq!(kvs_last_error(buf.as_mut_ptr(), buf.len(), &mut len), KVS_OK);
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(text, "client must not be NULL");
    assert_eq!(len, text.len());
    assert_eq!(expected_len, text.len());
}
