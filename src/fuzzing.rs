//! Fuzz targets: every parser of what a peer sends, each with the properties
//! it must keep beyond not panicking. A target takes arbitrary bytes and panics
//! when a property fails. The libFuzzer harnesses in `fuzz/` call them, and so
//! does `tests/fuzz_parsers.rs` over the seed corpus `fuzz/seeds/` and
//! deterministic mutations of it. Not a stable API.

use crate::protocol::{
    IceCandidate, InboundMessage, MAX_ID_LEN, MAX_PAYLOAD_LEN, RawOutbound, Role, SessionDescription, decode_payload,
    encode_payload,
};

pub use crate::aws::fuzzing::{control_plane_reply, endpoint_cache, service_error};
#[cfg(feature = "emulator")]
pub use crate::emulator::fuzzing::{emulator_request, emulator_signature};

/// A fuzz target: panics when its input breaks a property.
pub type Target = fn(&[u8]);

/// Every target with the name of its seed directory and libFuzzer harness.
pub const TARGETS: &[(&str, Target)] = &[
    ("inbound_frame", inbound_frame),
    ("payload", payload),
    ("outbound_frame", outbound_frame),
    ("control_plane_reply", control_plane_reply),
    ("service_error", service_error),
    ("http_date", http_date),
    ("endpoint_cache", endpoint_cache),
    #[cfg(feature = "emulator")]
    ("emulator_request", emulator_request),
    #[cfg(feature = "emulator")]
    ("emulator_signature", emulator_signature),
];

/// Splits `data` at its first `N - 1` NUL bytes; missing fields are empty.
/// Structured targets read their fields this way, so that seeds stay readable.
pub(crate) fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut fields = [&data[..0]; N];
    let mut parts = data.splitn(N, |&b| b == 0);
    for field in &mut fields {
        *field = parts.next().unwrap_or_default();
    }
    fields
}

/// Panics when `output`, text a parser copied out of `input_len` bytes, is
/// more than `slack` bytes longer: parsers must not amplify what they read.
pub(crate) fn assert_not_amplified(output: usize, input_len: usize, slack: usize) {
    assert!(output <= input_len + slack, "{output} bytes of output from {input_len} bytes of input");
}

/// A WebSocket text frame from the service (spec §4): parsed, its payload
/// decoded as SDP and as a candidate; `to_json` then `parse` gives the same
/// message back.
pub fn inbound_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(message) = InboundMessage::parse(text) else { return };
    let status_len = message.status_response.as_ref().map_or(0, |s| {
        s.correlation_id.len()
            + [&s.error_type, &s.status_code, &s.description]
                .iter()
                .map(|f| f.as_ref().map_or(0, String::len))
                .sum::<usize>()
    });
    let copied = message.message_type.as_str().len()
        + message.sender_client_id.as_ref().map_or(0, String::len)
        + message.message_payload.as_ref().map_or(0, String::len)
        + status_len;
    // Numbers are copied as their canonical text, which may be a little longer.
    assert_not_amplified(copied, data.len(), 128);
    let again = InboundMessage::parse(&message.to_json()).expect("to_json output parses");
    assert_eq!(again, message, "inbound round trip");
    if let Some(status) = &message.status_response {
        let _ = status.status_code_number();
    }
    if let Some(Ok(bytes)) = message.message_payload.as_deref().map(decode_payload) {
        payload_json(&bytes);
    }
}

/// The property a fix under way must establish: ids in a parsed frame are at
/// most [`MAX_ID_LEN`] characters (spec §4.1). Fails today; its test is ignored.
pub fn inbound_ids_bounded(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(message) = InboundMessage::parse(text) else { return };
    let ids =
        [message.sender_client_id.as_deref(), message.status_response.as_ref().map(|s| s.correlation_id.as_str())];
    for id in ids.into_iter().flatten() {
        assert!(id.len() <= MAX_ID_LEN, "an id of {} characters was accepted", id.len());
    }
}

/// A `messagePayload`: base64 decoding (and encoding back), and the decoded
/// bytes as SDP and candidate JSON.
pub fn payload(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = decode_payload(text)
    {
        assert!(bytes.len() <= text.len() / 4 * 3, "{} bytes decoded from {} characters", bytes.len(), text.len());
        assert_eq!(decode_payload(&encode_payload(&bytes)).as_ref(), Ok(&bytes), "base64 round trip");
    }
    assert_eq!(decode_payload(&encode_payload(data)).as_deref(), Ok(data), "base64 round trip");
    payload_json(data);
}

/// Decoded payload bytes as a session description and as a candidate; what
/// parses serialises and parses back to the same value.
fn payload_json(bytes: &[u8]) {
    if let Ok(sdp) = SessionDescription::parse(bytes) {
        assert_not_amplified(sdp.sdp.len(), bytes.len(), 0);
        assert_eq!(SessionDescription::parse(sdp.to_json().as_bytes()).as_ref(), Ok(&sdp), "SDP round trip");
    }
    if let Ok(candidate) = IceCandidate::parse(bytes) {
        let copied = candidate.candidate.len()
            + candidate.sdp_mid.as_ref().map_or(0, String::len)
            + candidate.username_fragment.as_ref().map_or(0, String::len);
        assert_not_amplified(copied, bytes.len(), 0);
        assert_eq!(IceCandidate::parse(candidate.to_json().as_bytes()).as_ref(), Ok(&candidate), "ICE round trip");
    }
}

/// A client's frame as the emulator reads it (spec §3): what validates keeps
/// the spec's limits, and serialises and parses back to the same request.
pub fn outbound_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(raw) = RawOutbound::parse(text) else { return };
    for role in [Role::Master, Role::Viewer] {
        let Ok(message) = raw.validate(role) else { continue };
        assert!(message.message_payload.len() <= MAX_PAYLOAD_LEN);
        for id in [&message.recipient_client_id, &message.correlation_id].into_iter().flatten() {
            assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "id of {} characters", id.len());
        }
        let again = RawOutbound::parse(&message.to_json()).expect("to_json output parses");
        assert_eq!(again.validate(role).as_ref(), Ok(&message), "outbound round trip");
    }
}

/// An HTTP `Date` header (clock-skew learning, spec §2.3); with the emulator,
/// also its date formatters and the SigV4 date parser, checked against each other.
pub fn http_date(data: &[u8]) {
    crate::aws::fuzzing::http_date(data);
    #[cfg(feature = "emulator")]
    crate::emulator::fuzzing::dates(data);
}
