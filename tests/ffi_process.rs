//! Process-wide behaviour of the C ABI, in one test because it changes global
//! state: the log callback, fork detection and the final `kvs_shutdown`.

mod common;

use common::{EmulatorThread, wait_for};
use kvs_signaling::ffi::kvs_result::*;
use kvs_signaling::ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static LOG_LINES: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());
static LOG_FREED: AtomicUsize = AtomicUsize::new(0);
static CLIENT_FREED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn on_log(
    _userdata: *mut c_void,
    level: u32,
    target: *const c_char,
    message: *const c_char,
    len: usize,
) {
    let target = unsafe { CStr::from_ptr(target) }.to_string_lossy().into_owned();
    let message = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    assert_eq!(message.len(), len);
    LOG_LINES.lock().unwrap().push((level, target, message));
}

unsafe extern "C" fn free_log(_userdata: *mut c_void) {
    LOG_FREED.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn free_client_userdata(_userdata: *mut c_void) {
    CLIENT_FREED.fetch_add(1, Ordering::SeqCst);
}

fn master(emulator: &EmulatorThread) -> *mut kvs_client {
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let mut config = kvs_client_config_default();
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.free_userdata = Some(free_client_userdata);
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK);
    client
}

/// Calls every entry point on the parent's `client` in a forked child; returns
/// the child's exit status: 0 when each refused at once with KVS_ERR_FORKED (a
/// hang is ended by an alarm: status 128 + SIGALRM), else the number of the
/// first check that failed.
fn every_call_in_forked_child(client: *mut kvs_client) -> i32 {
    // SAFETY: the child only calls into the library, which must refuse at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::alarm(5) };
        let candidate = kvs_ice_candidate {
            candidate: c"candidate:1 1 udp 1 192.0.2.1 1 typ host".as_ptr(),
            sdp_mid: ptr::null(),
            sdp_mline_index: -1,
            username_fragment: ptr::null(),
        };
        let mut metrics = std::mem::MaybeUninit::<kvs_client_metrics>::uninit();
        let mut other = ptr::null_mut();
        let config = kvs_client_config_default();
        let (mut count, mut len) = (0usize, 0usize);
        let checks = [
            kvs_client_connect(client) == KVS_ERR_FORKED,
            kvs_client_start(client) == KVS_ERR_FORKED,
            kvs_send_sdp_offer(
                client,
                c"v".as_ptr(),
                c"v=0".as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ) == KVS_ERR_FORKED,
            kvs_send_sdp_answer(
                client,
                c"v".as_ptr(),
                c"v=0".as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ) == KVS_ERR_FORKED,
            kvs_send_ice_candidate(client, c"v".as_ptr(), &candidate, ptr::null(), ptr::null_mut(), 0, ptr::null_mut())
                == KVS_ERR_FORKED,
            kvs_send_message(
                client,
                3,
                c"v".as_ptr(),
                b"{}".as_ptr(),
                2,
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
            ) == KVS_ERR_FORKED,
            kvs_client_state(client) == kvs_state::Disconnected as u32,
            kvs_client_get_metrics(client, metrics.as_mut_ptr()) == KVS_ERR_FORKED,
            kvs_client_get_ice_servers(client, ptr::null_mut(), 0, ptr::null_mut(), 0, &mut count, &mut len)
                == KVS_ERR_FORKED,
            kvs_client_disconnect(client) == KVS_ERR_FORKED,
            kvs_client_new(&config, &mut other) == KVS_ERR_FORKED,
            kvs_set_log_callback(kvs_log_level::Info as u32, Some(on_log), ptr::null_mut(), None) == KVS_ERR_FORKED,
            kvs_client_free(client) == KVS_ERR_FORKED,
            kvs_shutdown(1000) == KVS_ERR_FORKED,
        ];
        let code = checks.iter().position(|ok| !ok).map_or(0, |i| i as i32 + 1);
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) }
}

static SLOW_CALLBACKS: AtomicUsize = AtomicUsize::new(0);
static SLOW_FREED: AtomicUsize = AtomicUsize::new(0);

/// Takes 300 ms per message.
unsafe extern "C" fn slow_on_message(_userdata: *mut c_void, _message: *const kvs_message) {
    SLOW_CALLBACKS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
}

unsafe extern "C" fn free_slow(_userdata: *mut c_void) {
    SLOW_FREED.fetch_add(1, Ordering::SeqCst);
}

/// A master whose callbacks take 300 ms, and a viewer that queued `count`
/// candidates for it; returns (master, viewer).
fn slow_backlog(emulator: &EmulatorThread, count: usize) -> (*mut kvs_client, *mut kvs_client) {
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let mut config = kvs_client_config_default();
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.on_message = Some(slow_on_message);
    config.free_userdata = Some(free_slow);
    let mut master = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut master), KVS_OK);
    assert_eq!(kvs_client_connect(master), KVS_OK);
    config.role = kvs_role::Viewer as u32;
    config.client_id = c"slow-viewer".as_ptr();
    config.on_message = None;
    config.free_userdata = None;
    config.ice_per_second = KVS_UNPACED;
    let mut viewer = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut viewer), KVS_OK);
    assert_eq!(kvs_client_connect(viewer), KVS_OK);
    for n in 0..count {
        let line = CString::new(format!("candidate:{n} 1 udp 1 192.0.2.1 {n} typ host")).unwrap();
        let candidate = kvs_ice_candidate {
            candidate: line.as_ptr(),
            sdp_mid: ptr::null(),
            sdp_mline_index: 0,
            username_fragment: ptr::null(),
        };
        let rc =
            kvs_send_ice_candidate(viewer, ptr::null(), &candidate, ptr::null(), ptr::null_mut(), 0, ptr::null_mut());
        assert_eq!(rc, KVS_OK);
    }
    wait_for("the first slow callback", Duration::from_secs(5), || {
        (SLOW_CALLBACKS.load(Ordering::SeqCst) > 0).then_some(())
    });
    (master, viewer)
}

#[test]
fn log_callback_fork_detection_and_shutdown() {
    let emulator = EmulatorThread::start();

    assert_eq!(kvs_set_log_callback(99, Some(on_log), ptr::null_mut(), Some(free_log)), KVS_ERR_INVALID_ARGUMENT);
    assert_eq!(LOG_FREED.load(Ordering::SeqCst), 1, "a refused registration releases its userdata");
    assert_eq!(kvs_set_log_callback(kvs_log_level::Info as u32, Some(on_log), ptr::null_mut(), Some(free_log)), KVS_OK);

    let client = master(&emulator);
    assert_eq!(kvs_client_connect(client), KVS_OK);
    let lines = LOG_LINES.lock().unwrap().clone();
    assert!(
        lines.iter().any(|(level, target, text)| *level == kvs_log_level::Info as u32
            && target == "client"
            && text.contains("connected to ws://127.0.0.1:")),
        "{lines:?}"
    );
    // Replacing the callback releases the old userdata exactly once.
    assert_eq!(kvs_set_log_callback(kvs_log_level::Warn as u32, None, ptr::null_mut(), None), KVS_OK);
    assert_eq!(LOG_FREED.load(Ordering::SeqCst), 2);

    assert_eq!(every_call_in_forked_child(client), 0, "a forked child gets KVS_ERR_FORKED from every call, at once");
    // The parent is untouched by its child's calls.
    assert_eq!(kvs_client_state(client), kvs_state::Connected as u32);

    // A connect that kvs_shutdown interrupts, and a backlog of 300 ms callbacks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_endpoint = CString::new(format!("ws://{}", silent.local_addr().unwrap())).unwrap();
    let mut config = kvs_client_config_default();
    config.channel_arn = c"arn:aws:kinesisvideo:us-west-2:123456789012:channel/x/1".as_ptr();
    config.endpoint = silent_endpoint.as_ptr();
    config.connect_timeout_ms = 30_000;
    let mut stuck = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut stuck), KVS_OK);
    let stuck_addr = stuck as usize;
    let connecting = std::thread::spawn(move || kvs_client_connect(stuck_addr as *const kvs_client));
    let (slow_master, slow_viewer) = slow_backlog(&emulator, 50);

    let started = std::time::Instant::now();
    // A log callback again: library code still running after the shutdown
    // (e.g. a blocking credentials fetch on a thread of the old runtime)
    // must not reach it.
    assert_eq!(kvs_set_log_callback(kvs_log_level::Warn as u32, Some(on_log), ptr::null_mut(), None), KVS_OK);
    let logged = |text: &str| LOG_LINES.lock().unwrap().iter().any(|(_, _, line)| line == text);
    kvs_signaling::log::write(kvs_signaling::log::Level::Warn, "test", "before kvs_shutdown");
    assert!(logged("before kvs_shutdown"));
    assert_eq!(kvs_shutdown(1000), KVS_OK, "a 300 ms callback finishes within the 1 s timeout");
    std::thread::spawn(|| kvs_signaling::log::write(kvs_signaling::log::Level::Warn, "test", "after kvs_shutdown"))
        .join()
        .unwrap();
    assert!(!logged("after kvs_shutdown"), "the log callback ran after kvs_shutdown returned");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "kvs_shutdown(1000) took {took:?}");
    let ran = SLOW_CALLBACKS.load(Ordering::SeqCst);
    assert!(ran < 10, "{ran} of 50 queued callbacks ran: the backlog was not discarded");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(SLOW_CALLBACKS.load(Ordering::SeqCst), ran, "a callback started after kvs_shutdown returned");
    assert_eq!(connecting.join().unwrap(), KVS_ERR_SHUTDOWN, "a connect interrupted by kvs_shutdown");
    for freed in [slow_master, slow_viewer, stuck] {
        let started = std::time::Instant::now();
        assert_eq!(kvs_client_free(freed), KVS_OK);
        assert!(started.elapsed() < Duration::from_millis(200), "free after shutdown took {:?}", started.elapsed());
    }
    assert_eq!(SLOW_FREED.load(Ordering::SeqCst), 1, "free_userdata once, on the freeing thread");
    assert_eq!(kvs_client_connect(client), KVS_ERR_SHUTDOWN);
    let mut other = ptr::null_mut();
    let mut config = kvs_client_config_default();
    config.channel_arn = c"arn:aws:kinesisvideo:us-west-2:1:channel/x/1".as_ptr();
    config.endpoint = c"ws://127.0.0.1:9".as_ptr();
    assert_eq!(kvs_client_new(&config, &mut other), KVS_ERR_SHUTDOWN);
    // A client freed after shutdown still releases its userdata, once.
    assert_eq!(kvs_client_free(client), KVS_OK);
    wait_for("free_userdata", Duration::from_secs(2), || (CLIENT_FREED.load(Ordering::SeqCst) == 1).then_some(()));
    drop(emulator);
}
