//! Wire format of the signaling data plane (spec §3–§5): outbound requests,
//! inbound messages, field validation and the SDP / ICE payload helpers.
//!
//! Pure functions over strings and bytes: no I/O, no `unsafe`, no global state.
//! Both the client and the emulator build on this module.

mod fields;
mod inbound;
mod outbound;
mod payload;
mod validate;

pub use inbound::{InboundError, InboundMessage, MessageType, StatusResponse};
pub use outbound::{Action, OutboundMessage, RawOutbound, Role};
pub use payload::{IceCandidate, PayloadError, SdpType, SessionDescription, decode_payload, encode_payload};
pub use validate::{
    Field, MAX_ARN_LEN, MAX_DESCRIPTION_LEN, MAX_ERROR_TYPE_LEN, MAX_ID_LEN, MAX_PAYLOAD_LEN, ValidationError,
    prefix_within, validate_channel_arn, validate_client_id, validate_id, validate_payload,
};

/// Looks a key up in a JSON object ignoring ASCII case, so that the camelCase
/// keys of the JS SDK and the PascalCase keys of the C SDK both match (spec §3.1, §10.6).
pub(crate) fn get_ci<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// Writes a flat JSON object with keys in insertion order, without building a
/// `serde_json::Value` tree (the send path calls this for every message).
pub(crate) struct JsonObject {
    text: String,
}

impl JsonObject {
    pub(crate) fn with_capacity(capacity: usize) -> JsonObject {
        let mut text = String::with_capacity(capacity + 2);
        text.push('{');
        JsonObject { text }
    }

    fn key(&mut self, key: &str) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.push_escaped(key);
        self.text.push(':');
    }

    fn push_escaped(&mut self, value: &str) {
        // Serialising a &str cannot fail.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        self.text.push_str(&escaped);
    }

    /// Adds `"key":"value"` with the value escaped.
    pub(crate) fn string(&mut self, key: &str, value: &str) -> &mut JsonObject {
        self.key(key);
        self.push_escaped(value);
        self
    }

    /// Adds `"key":value` with `value` already JSON (a number, a bool, an object).
    pub(crate) fn raw(&mut self, key: &str, value: &str) -> &mut JsonObject {
        self.key(key);
        self.text.push_str(value);
        self
    }

    pub(crate) fn finish(&mut self) -> String {
        self.text.push('}');
        std::mem::take(&mut self.text)
    }
}
