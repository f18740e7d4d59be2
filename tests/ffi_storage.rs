//! WebRTC ingestion through the C ABI, called from Rust as C would call it,
//! against the emulator (on its own runtime thread): the media storage
//! configuration read and changed with `kvs_client_get_media_storage` /
//! `kvs_client_set_media_storage` and their argument checks, and a master with
//! `media_storage` AUTO that joins the storage session, gets its offer through
//! `on_message` (with the join and offer notices), and answers it.

mod common;

use common::{EmulatorThread, wait_for};
use kvs_signaling::ffi::kvs_result::*;
use kvs_signaling::ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::Mutex;
use std::time::Duration;

const STREAM: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/camera-1/1700000000000";

fn last_error() -> String {
    unsafe { CStr::from_ptr(kvs_last_error_message()) }.to_string_lossy().into_owned()
}

/// What `on_message` saw: (type, sender, SDP type, SDP text).
type Seen = Mutex<Vec<(u32, Option<String>, Option<String>)>>;

unsafe extern "C" fn record_message(userdata: *mut c_void, message: *const kvs_message) {
    let seen = unsafe { &*(userdata as *const Seen) };
    let message = unsafe { &*message };
    let text = |p: *const c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
    seen.lock().unwrap().push((message.message_type, text(message.sender_client_id), text(message.sdp_type)));
}

/// A master of the emulator's channel through its control plane (keys the
/// emulator does not check).
fn control_plane_config(control_plane: &CString) -> kvs_client_config {
    let mut config = kvs_client_config_default();
    config.role = kvs_role::Master as u32;
    config.use_control_plane = true;
    config.channel_name = c"test-channel".as_ptr();
    config.control_plane_url = control_plane.as_ptr();
    config.skip_ice_servers = true;
    config.access_key_id = c"AKIDEXAMPLESTORAGE01".as_ptr();
    config.secret_access_key = c"storage/secret".as_ptr();
    config
}

fn get(client: *const kvs_client, capacity: usize) -> (kvs_result, bool, String, usize) {
    let mut enabled = false;
    let mut buf = vec![0 as c_char; capacity.max(1)];
    let mut len = usize::MAX;
    let out = if capacity == 0 { ptr::null_mut() } else { buf.as_mut_ptr() };
    let result = kvs_client_get_media_storage(client, &mut enabled, out, capacity, &mut len);
    let text = if result == KVS_OK && capacity > 0 {
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    (result, enabled, text, len)
}

#[test]
fn media_storage_is_read_and_changed_through_the_client() {
    let emulator = EmulatorThread::start();
    let control_plane = CString::new(emulator.endpoint.replacen("ws://", "http://", 1)).unwrap();
    let config = control_plane_config(&control_plane);
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());

    assert_eq!(get(client, 2048), (KVS_OK, false, String::new(), 0));
    // Argument checks come before any call.
    let calls = emulator.stats().control_plane.total();
    assert_eq!(kvs_client_set_media_storage(client, true, ptr::null()), KVS_ERR_NULL_PARAMETER);
    assert_eq!(kvs_client_set_media_storage(client, true, c"not-an-arn".as_ptr()), KVS_ERR_INVALID_ARGUMENT);
    let bad_utf8 = [0xffu8 as c_char, 0];
    assert_eq!(kvs_client_set_media_storage(client, true, bad_utf8.as_ptr()), KVS_ERR_INVALID_UTF8);
    assert_eq!(kvs_get_media_storage_null_out(client), KVS_ERR_NULL_PARAMETER, "out_enabled NULL: {}", last_error());
    assert_eq!(emulator.stats().control_plane.total(), calls, "a refused argument made a call");

    let stream = CString::new(STREAM).unwrap();
    assert_eq!(kvs_client_set_media_storage(client, true, stream.as_ptr()), KVS_OK, "{}", last_error());
    // Size query, a buffer too small, then the whole ARN.
    assert_eq!(get(client, 0), (KVS_OK, true, String::new(), STREAM.len()));
    // Too small: only the length is written (`enabled` stays as it was).
    let (code, enabled, _, len) = get(client, STREAM.len());
    assert_eq!((code, enabled, len), (KVS_ERR_BUFFER_TOO_SMALL, false, STREAM.len()));
    assert_eq!(get(client, STREAM.len() + 1), (KVS_OK, true, STREAM.to_owned(), STREAM.len()));
    emulator.with(|e| assert!(e.storage_sessions().is_empty(), "no session before a join"));

    assert_eq!(kvs_client_set_media_storage(client, false, ptr::null()), KVS_OK, "{}", last_error());
    assert!(!get(client, 2048).1, "disabled again");
    assert_eq!(kvs_client_free(client), KVS_OK);

    // A client without the control plane cannot make these calls.
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let mut direct = kvs_client_config_default();
    direct.channel_arn = arn.as_ptr();
    direct.endpoint = endpoint.as_ptr();
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&direct, &mut client), KVS_OK, "{}", last_error());
    assert_eq!(get(client, 2048).0, KVS_ERR_INVALID_CONFIG);
    assert!(last_error().contains("control plane"), "{}", last_error());
    assert_eq!(kvs_client_free(client), KVS_OK);
    assert_eq!(get(ptr::null(), 2048).0, KVS_ERR_NULL_PARAMETER);
}

fn kvs_get_media_storage_null_out(client: *const kvs_client) -> kvs_result {
    let mut len = 0;
    kvs_client_get_media_storage(client, ptr::null_mut(), ptr::null_mut(), 0, &mut len)
}

#[test]
fn a_master_in_auto_mode_joins_gets_the_storage_offer_and_answers() {
    let emulator = EmulatorThread::start();
    emulator.with(|e| assert!(e.set_media_storage("test-channel", Some(STREAM))));
    let control_plane = CString::new(emulator.endpoint.replacen("ws://", "http://", 1)).unwrap();
    let seen: &'static Seen = Box::leak(Box::default());
    let mut config = control_plane_config(&control_plane);
    config.media_storage = kvs_media_storage::Auto as u32;
    config.on_message = Some(record_message);
    config.userdata = seen as *const Seen as *mut c_void;
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK, "{}", last_error());
    assert_eq!(kvs_client_connect(client), KVS_OK, "{}", last_error());

    let session = wait_for("the storage session's offer", Duration::from_secs(10), || {
        let seen = seen.lock().unwrap();
        seen.iter()
            .find(|(kind, _, sdp_type)| {
                *kind == kvs_message_type::SdpOffer as u32 && sdp_type.as_deref() == Some("offer")
            })
            .and_then(|(_, sender, _)| sender.clone())
    });
    assert!(session.starts_with("storage-"), "{session}");
    let kinds: Vec<u32> = seen.lock().unwrap().iter().map(|(kind, _, _)| *kind).collect();
    let joined = kvs_message_type::StorageSessionJoined as u32;
    let offered = kvs_message_type::StorageOfferReceived as u32;
    assert!(kinds.contains(&joined), "{kinds:?}");
    wait_for("the offer notice", Duration::from_secs(5), || {
        seen.lock().unwrap().iter().any(|(kind, _, _)| *kind == offered).then_some(())
    });

    let recipient = CString::new(session.clone()).unwrap();
    let answer = c"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=camera\r\n";
    let result = kvs_send_sdp_answer(
        client,
        recipient.as_ptr(),
        answer.as_ptr(),
        ptr::null(),
        ptr::null_mut(),
        0,
        ptr::null_mut(),
    );
    assert_eq!(result, KVS_OK, "{}", last_error());
    let recorded = wait_for("the answer at the storage session", Duration::from_secs(5), || {
        emulator.with(|e| e.storage_sessions().into_iter().find(|s| s.session_id == session).and_then(|s| s.answer))
    });
    assert!(recorded.contains("s=camera"), "{recorded}");

    let mut metrics = kvs_client_metrics_empty();
    assert_eq!(kvs_client_get_metrics(client, &mut metrics), KVS_OK);
    assert!(metrics.storage_joins >= 1 && metrics.time_to_storage_offer_us > 0, "{} joins", metrics.storage_joins);
    assert_eq!(kvs_client_free(client), KVS_OK);
}

fn kvs_client_metrics_empty() -> kvs_client_metrics {
    // SAFETY: a plain C struct of integers; all zero is a valid value.
    unsafe { std::mem::zeroed() }
}
