//! Every code a C function returns is in the "Errors:" list the header gives
//! for it: each function that returns kvs_result has such a list, and the
//! codes that calls with bad arguments (and against a closed port, a silent
//! listener, a connected client) actually return are checked against it.

mod common;

use common::EmulatorThread;
use kvs_signaling::ffi::kvs_result::{self, *};
use kvs_signaling::ffi::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, c_char};
use std::path::Path;
use std::ptr;

/// Function name -> the codes its "Errors:" paragraph names.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kvs_signaling.h"))
        .expect("the committed header");
    let mut lists = BTreeMap::new();
    let mut doc = String::new();
    for line in header.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("/**") {
            doc.clear();
        } else if let Some(text) = trimmed.strip_prefix('*') {
            doc.push_str(text);
            doc.push('\n');
        } else if line.starts_with("kvs_result kvs_") {
            let name = line["kvs_result ".len()..].split('(').next().unwrap().to_owned();
            let codes: BTreeSet<String> = doc
                .split_once("Errors:")
                .map(|(_, list)| {
                    list.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|word| word.starts_with("KVS_ERR_"))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            lists.insert(name, codes);
        }
    }
    lists
}

fn name(code: kvs_result) -> String {
    format!("{code:?}")
}

/// Checks each (function, returned code) against the header.
struct Checker {
    lists: BTreeMap<String, BTreeSet<String>>,
    seen: Vec<(&'static str, kvs_result)>,
}

impl Checker {
    fn saw(&mut self, function: &'static str, code: kvs_result) {
        self.seen.push((function, code));
    }

    fn verify(&self) {
        let mut wrong = Vec::new();
        for (function, code) in &self.seen {
            let list = self.lists.get(*function).unwrap_or_else(|| panic!("{function} is not in the header"));
            if *code != KVS_OK && !list.contains(&name(*code)) {
                wrong.push(format!("{function} returned {} but its Errors: list is {list:?}", name(*code)));
            }
        }
        assert!(wrong.is_empty(), "undocumented codes:\n{}", wrong.join("\n"));
        let distinct: BTreeSet<_> =
            self.seen.iter().filter(|(_, c)| *c != KVS_OK).map(|(f, c)| (*f, *c as u32)).collect();
        assert!(distinct.len() >= 40, "only {} (function, error) pairs exercised", distinct.len());
    }
}

#[test]
fn every_function_that_returns_a_code_lists_its_errors() {
    let lists = documented();
    assert!(lists.len() >= 16, "{:?}", lists.keys());
    let empty: Vec<_> = lists.iter().filter(|(_, codes)| codes.is_empty()).map(|(f, _)| f.clone()).collect();
    assert!(empty.is_empty(), "no Errors: list for {empty:?}");
    for codes in lists.values() {
        for code in codes {
            assert!(
                (0..64).filter_map(kvs_result::from_u32).any(|known| &name(known) == code),
                "{code} is not a kvs_result"
            );
        }
    }
}

#[test]
fn the_codes_functions_return_are_the_documented_ones() {
    let emulator = EmulatorThread::start();
    let mut check = Checker { lists: documented(), seen: Vec::new() };
    let arn = CString::new(emulator.arn.clone()).unwrap();
    let endpoint = CString::new(emulator.endpoint.clone()).unwrap();
    let bad_utf8 = c"\xff\xfe".as_ptr();
    let long_id = CString::new("a".repeat(300)).unwrap();
    let mut out = [0 as c_char; 300];
    let mut len = 0usize;

    // kvs_client_new
    let mut client = ptr::null_mut();
    check.saw("kvs_client_new", kvs_client_new(ptr::null(), &mut client));
    let mut config = kvs_client_config_default();
    check.saw("kvs_client_new", kvs_client_new(&config, ptr::null_mut()));
    check.saw("kvs_client_new", kvs_client_new(&config, &mut client));
    config.channel_arn = bad_utf8;
    config.endpoint = endpoint.as_ptr();
    check.saw("kvs_client_new", kvs_client_new(&config, &mut client));
    config.channel_arn = c"arn:nope".as_ptr();
    check.saw("kvs_client_new", kvs_client_new(&config, &mut client));
    config.channel_arn = arn.as_ptr();
    config.role = 7;
    check.saw("kvs_client_new", kvs_client_new(&config, &mut client));
    config.role = kvs_role::Master as u32;
    config.use_control_plane = true;
    config.channel_name = c"test-channel".as_ptr();
    check.saw("kvs_client_new", kvs_client_new(&config, &mut client));
    config.use_control_plane = false;

    // A viewer (sends without a connection), a connected master.
    let mut viewer_config = kvs_client_config_default();
    viewer_config.role = kvs_role::Viewer as u32;
    viewer_config.channel_arn = arn.as_ptr();
    viewer_config.endpoint = endpoint.as_ptr();
    viewer_config.client_id = c"lists-viewer".as_ptr();
    let mut viewer = ptr::null_mut();
    assert_eq!(kvs_client_new(&viewer_config, &mut viewer), KVS_OK);
    let mut master = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut master), KVS_OK);
    check.saw("kvs_client_connect", kvs_client_connect(ptr::null()));
    assert_eq!(kvs_client_connect(master), KVS_OK);
    check.saw("kvs_client_connect", kvs_client_connect(master));
    check.saw("kvs_client_start", kvs_client_start(master));
    check.saw("kvs_client_start", kvs_client_start(ptr::null()));

    // Sends.
    let sdp = c"v=0\r\n".as_ptr();
    let big = CString::new("x".repeat(9000)).unwrap();
    let offer = |client, recipient: *const c_char, sdp: *const c_char, id: *const c_char, buf: *mut c_char, cap| {
        kvs_send_sdp_offer(client, recipient, sdp, id, buf, cap, ptr::null_mut())
    };
    check.saw("kvs_send_sdp_offer", offer(ptr::null(), ptr::null(), sdp, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(viewer, ptr::null(), sdp, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, ptr::null(), sdp, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v".as_ptr(), ptr::null(), ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v".as_ptr(), c"".as_ptr(), ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v".as_ptr(), big.as_ptr(), ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v".as_ptr(), bad_utf8, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"".as_ptr(), sdp, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, long_id.as_ptr(), sdp, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v w".as_ptr(), sdp, ptr::null(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v".as_ptr(), sdp, c"a/b".as_ptr(), ptr::null_mut(), 0));
    check.saw("kvs_send_sdp_offer", offer(master, c"v".as_ptr(), sdp, ptr::null(), out.as_mut_ptr(), 10));
    let mut connected_viewer = ptr::null_mut();
    assert_eq!(kvs_client_new(&viewer_config, &mut connected_viewer), KVS_OK);
    assert_eq!(kvs_client_connect(connected_viewer), KVS_OK);
    check.saw(
        "kvs_send_sdp_answer",
        kvs_send_sdp_answer(connected_viewer, c"m".as_ptr(), sdp, ptr::null(), ptr::null_mut(), 0, ptr::null_mut()),
    );
    check.saw(
        "kvs_send_sdp_answer",
        kvs_send_sdp_answer(ptr::null(), ptr::null(), sdp, ptr::null(), ptr::null_mut(), 0, ptr::null_mut()),
    );
    let mut candidate = kvs_ice_candidate {
        candidate: c"candidate:1 1 udp 1 192.0.2.1 1 typ host".as_ptr(),
        sdp_mid: long_id.as_ptr(),
        sdp_mline_index: 0,
        username_fragment: ptr::null(),
    };
    let ice = |client, candidate: *const kvs_ice_candidate| {
        kvs_send_ice_candidate(client, c"v".as_ptr(), candidate, ptr::null(), ptr::null_mut(), 0, ptr::null_mut())
    };
    check.saw("kvs_send_ice_candidate", ice(master, &candidate));
    candidate.sdp_mid = ptr::null();
    candidate.sdp_mline_index = 70_000;
    check.saw("kvs_send_ice_candidate", ice(master, &candidate));
    candidate.sdp_mline_index = 0;
    candidate.username_fragment = bad_utf8;
    check.saw("kvs_send_ice_candidate", ice(master, &candidate));
    check.saw("kvs_send_ice_candidate", ice(master, ptr::null()));
    candidate.username_fragment = ptr::null();
    candidate.candidate = c"".as_ptr();
    check.saw("kvs_send_ice_candidate", ice(master, &candidate));
    let payload = b"{}";
    let message = |client, action, payload: *const u8, len| {
        kvs_send_message(client, action, c"v".as_ptr(), payload, len, ptr::null(), ptr::null_mut(), 0, ptr::null_mut())
    };
    check.saw("kvs_send_message", message(master, 9, payload.as_ptr(), 2));
    check.saw("kvs_send_message", message(master, 3, payload.as_ptr(), 0));
    check.saw("kvs_send_message", message(master, 3, ptr::null(), 2));
    check.saw("kvs_send_message", message(master, 3, payload.as_ptr(), 100_000));
    check.saw("kvs_send_message", message(ptr::null(), 3, payload.as_ptr(), 2));

    // Getters and buffers.
    let mut count = 0usize;
    check.saw("kvs_client_get_metrics_sized", kvs_client_get_metrics(master, ptr::null_mut()));
    check.saw("kvs_client_get_metrics_sized", kvs_client_get_metrics(ptr::null(), ptr::null_mut()));
    check.saw(
        "kvs_client_get_ice_servers_sized",
        kvs_client_get_ice_servers(master, ptr::null_mut(), 0, ptr::null_mut(), 0, ptr::null_mut(), &mut len),
    );
    check.saw(
        "kvs_client_get_ice_servers_sized",
        kvs_client_get_ice_servers(ptr::null(), ptr::null_mut(), 0, ptr::null_mut(), 0, &mut count, &mut len),
    );
    check.saw("kvs_stun_url", kvs_stun_url(ptr::null(), false, false, out.as_mut_ptr(), out.len(), &mut len));
    check.saw("kvs_stun_url", kvs_stun_url(bad_utf8, false, false, out.as_mut_ptr(), out.len(), &mut len));
    check.saw("kvs_stun_url", kvs_stun_url(c"US WEST".as_ptr(), false, false, out.as_mut_ptr(), out.len(), &mut len));
    check.saw("kvs_stun_url", kvs_stun_url(c"us-west-2".as_ptr(), false, false, out.as_mut_ptr(), 4, &mut len));
    check.saw("kvs_last_error", kvs_last_error(ptr::null_mut(), 0, ptr::null_mut()));
    check.saw("kvs_last_error", kvs_last_error(out.as_mut_ptr(), 1, &mut len));
    check.saw("kvs_set_log_callback", kvs_set_log_callback(77, None, ptr::null_mut(), None));
    let mut small = kvs_client_config_default();
    check.saw("kvs_client_config_init", kvs_client_config_init(ptr::null_mut(), 0));
    check.saw("kvs_client_config_init", kvs_client_config_init(&mut small, 8));
    let mut m = std::mem::MaybeUninit::<kvs_client_metrics>::uninit();
    check.saw("kvs_client_get_metrics_sized", kvs_client_get_metrics_sized(master, m.as_mut_ptr(), 8));
    check.saw(
        "kvs_credentials_sink_set",
        kvs_credentials_sink_set(ptr::null_mut(), ptr::null(), ptr::null(), ptr::null(), 0),
    );

    // Connect failures: a closed port, a listener that never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_endpoint = CString::new(format!("ws://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_endpoint = CString::new(format!("ws://{}", silent.local_addr().unwrap())).unwrap();
    for endpoint in [&closed_endpoint, &silent_endpoint] {
        let mut failing = kvs_client_config_default();
        failing.channel_arn = arn.as_ptr();
        failing.endpoint = endpoint.as_ptr();
        failing.connect_timeout_ms = 300;
        let mut client = ptr::null_mut();
        assert_eq!(kvs_client_new(&failing, &mut client), KVS_OK);
        check.saw("kvs_client_connect", kvs_client_connect(client));
        check.saw("kvs_client_disconnect", kvs_client_disconnect(client));
        check.saw("kvs_client_free", kvs_client_free(client));
    }
    check.saw("kvs_client_disconnect", kvs_client_disconnect(ptr::null()));

    for client in [master, viewer, connected_viewer] {
        check.saw("kvs_client_free", kvs_client_free(client));
    }
    let text = unsafe { CStr::from_ptr(kvs_last_error_message()) };
    assert!(text.to_bytes().len() < 4096);
    check.verify();
}
