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

fn connect_in_forked_child(client: *const kvs_client) -> i32 {
    // SAFETY: the child only calls into the library, which must refuse at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = if kvs_client_connect(client) == KVS_ERR_FORKED { 0 } else { 1 };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WEXITSTATUS(status)
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

    assert_eq!(connect_in_forked_child(client), 0, "a forked child gets KVS_ERR_FORKED");

    assert_eq!(kvs_shutdown(2000), KVS_OK);
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
