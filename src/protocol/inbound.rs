//! Service → client messages (spec §4).

use super::validate::{Field, MAX_DESCRIPTION_LEN, MAX_ERROR_TYPE_LEN, MAX_ID_LEN, ValidationError, validate_id};
use super::{JsonObject, get_ci, prefix_within};
use serde_json::{Map, Value};
use std::fmt;

/// The `messageType` of an inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    SdpOffer,
    SdpAnswer,
    IceCandidate,
    GoAway,
    ReconnectIceServer,
    StatusResponse,
    /// A type this library does not know; kept so it can be logged.
    Unknown(String),
}

impl MessageType {
    /// Parses a wire name; unknown names become [`MessageType::Unknown`].
    pub fn parse(value: &str) -> MessageType {
        match value {
            "SDP_OFFER" => MessageType::SdpOffer,
            "SDP_ANSWER" => MessageType::SdpAnswer,
            "ICE_CANDIDATE" => MessageType::IceCandidate,
            "GO_AWAY" => MessageType::GoAway,
            "RECONNECT_ICE_SERVER" => MessageType::ReconnectIceServer,
            "STATUS_RESPONSE" => MessageType::StatusResponse,
            other => MessageType::Unknown(other.to_owned()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            MessageType::SdpOffer => "SDP_OFFER",
            MessageType::SdpAnswer => "SDP_ANSWER",
            MessageType::IceCandidate => "ICE_CANDIDATE",
            MessageType::GoAway => "GO_AWAY",
            MessageType::ReconnectIceServer => "RECONNECT_ICE_SERVER",
            MessageType::StatusResponse => "STATUS_RESPONSE",
            MessageType::Unknown(name) => name,
        }
    }
}

/// `statusResponse` of a STATUS_RESPONSE message: the service's report that the
/// request with `correlation_id` failed (or, in some fixtures, succeeded).
///
/// As parsed, every text field is within the spec's length (spec §4.1): a
/// frame whose correlation id breaks its rules is not a message at all, and the
/// free-text fields are cut, since the report itself (which send failed) is
/// worth keeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusResponse {
    /// 1–256 characters of `[a-zA-Z0-9_.-]`.
    pub correlation_id: String,
    /// At most 256 bytes ([`MAX_ERROR_TYPE_LEN`]); longer ones are cut.
    pub error_type: Option<String>,
    /// HTTP-style status as the service sends it: a string such as `"400"`. At
    /// most 256 bytes; longer ones are cut.
    pub status_code: Option<String>,
    /// At most 1,024 bytes ([`MAX_DESCRIPTION_LEN`]); longer ones are cut at a
    /// character boundary.
    pub description: Option<String>,
    /// The undocumented `success` flag of the JS SDK's fixture, when present.
    pub success: Option<bool>,
}

impl StatusResponse {
    /// The status code as a number, when it is a decimal string (or a JSON number
    /// that was converted to one); `None` when absent or not numeric.
    pub fn status_code_number(&self) -> Option<u32> {
        self.status_code.as_deref()?.trim().parse().ok()
    }
}

/// One inbound message, tolerant of both key casings and unknown keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub message_type: MessageType,
    /// The viewer that sent it; absent on master → viewer deliveries (spec §4.2).
    /// As parsed: 1–256 characters of `[a-zA-Z0-9_.-]`; an empty one reads as absent.
    pub sender_client_id: Option<String>,
    /// Base64 text as received; decode with [`super::decode_payload`].
    pub message_payload: Option<String>,
    pub status_response: Option<StatusResponse>,
}

/// Why a frame was not a protocol message; the client logs it and carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundError {
    /// A zero-length (or all-whitespace) frame (spec §4.4).
    Empty,
    /// Not JSON, or JSON that is not an object.
    NotJson,
    /// A JSON object without `messageType`, e.g. an API-Gateway error frame
    /// `{"message": "Endpoint request timed out", ...}`; carries its text.
    NotProtocol(String),
    /// `messageType` present but not a string, or `statusResponse` present but
    /// not an object with a string `correlationId`.
    WrongType(&'static str),
    /// An identifier (`senderClientId`, `statusResponse.correlationId`) or the
    /// `messageType` breaks the spec's length or pattern (spec §4.1). Such a frame
    /// is skipped whole, so that no application buffer sized by the spec
    /// (256 characters) ever receives it.
    Invalid(ValidationError),
}

impl fmt::Display for InboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundError::Empty => f.write_str("empty frame"),
            InboundError::NotJson => f.write_str("frame is not a JSON object"),
            InboundError::NotProtocol(text) => write!(f, "frame without messageType: {text}"),
            InboundError::WrongType(field) => write!(f, "field {field} has the wrong type"),
            InboundError::Invalid(error) => write!(f, "invalid field: {error}"),
        }
    }
}

impl std::error::Error for InboundError {}

fn string_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    match get_ci(map, key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A free-text field cut to `max_bytes` at a character boundary.
fn text_field(map: &Map<String, Value>, key: &str, max_bytes: usize) -> Option<String> {
    let mut text = string_field(map, key)?;
    let kept = prefix_within(&text, max_bytes).len();
    text.truncate(kept);
    Some(text)
}

/// `senderClientId`: absent, or a valid id (an empty one reads as absent).
fn sender_field(map: &Map<String, Value>) -> Result<Option<String>, InboundError> {
    match string_field(map, "senderClientId") {
        Some(id) if !id.is_empty() => {
            validate_id(Field::SenderClientId, &id).map_err(InboundError::Invalid)?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

impl InboundMessage {
    /// Parses one text frame (spec §4.1, §4.3).
    pub fn parse(text: &str) -> Result<InboundMessage, InboundError> {
        if text.trim_matches(|c: char| c.is_whitespace() || c == '\0').is_empty() {
            return Err(InboundError::Empty);
        }
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text.trim_end_matches('\0')) else {
            return Err(InboundError::NotJson);
        };
        let message_type = match get_ci(&map, "messageType") {
            None => {
                let message = text_field(&map, "message", MAX_DESCRIPTION_LEN).unwrap_or_default();
                return Err(InboundError::NotProtocol(message));
            }
            Some(Value::String(s)) if s.len() > MAX_ID_LEN => {
                let (field, max, len) = (Field::MessageType, MAX_ID_LEN, s.len());
                return Err(InboundError::Invalid(ValidationError::TooLong { field, max, len }));
            }
            Some(Value::String(s)) => MessageType::parse(s),
            Some(_) => return Err(InboundError::WrongType("messageType")),
        };
        let status_response = match get_ci(&map, "statusResponse") {
            None | Some(Value::Null) => None,
            Some(Value::Object(status)) => Some(StatusResponse {
                correlation_id: match get_ci(status, "correlationId") {
                    Some(Value::String(s)) => {
                        validate_id(Field::CorrelationId, s).map_err(InboundError::Invalid)?;
                        s.clone()
                    }
                    _ => return Err(InboundError::WrongType("statusResponse.correlationId")),
                },
                error_type: text_field(status, "errorType", MAX_ERROR_TYPE_LEN),
                status_code: text_field(status, "statusCode", MAX_ERROR_TYPE_LEN),
                description: text_field(status, "description", MAX_DESCRIPTION_LEN),
                success: get_ci(status, "success").and_then(Value::as_bool),
            }),
            Some(_) => return Err(InboundError::WrongType("statusResponse")),
        };
        Ok(InboundMessage {
            message_type,
            sender_client_id: sender_field(&map)?,
            message_payload: string_field(&map, "messagePayload"),
            status_response,
        })
    }

    /// The frame text as the service sends it (camelCase, absent keys omitted).
    pub fn to_json(&self) -> String {
        let payload_len = self.message_payload.as_ref().map_or(0, String::len);
        let mut json = JsonObject::with_capacity(payload_len + 96);
        if let Some(s) = &self.sender_client_id {
            json.string("senderClientId", s);
        }
        json.string("messageType", self.message_type.as_str());
        if let Some(p) = &self.message_payload {
            json.string("messagePayload", p);
        }
        if let Some(s) = &self.status_response {
            let mut status = JsonObject::with_capacity(128);
            status.string("correlationId", &s.correlation_id);
            for (key, value) in
                [("errorType", &s.error_type), ("statusCode", &s.status_code), ("description", &s.description)]
            {
                if let Some(v) = value {
                    status.string(key, v);
                }
            }
            if let Some(success) = s.success {
                status.raw("success", if success { "true" } else { "false" });
            }
            json.raw("statusResponse", &status.finish());
        }
        json.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_captured_frame() {
        let frame = r#"{"messagePayload":"eyJjYW5kaWRhdGUiOiJ4In0=","messageType":"ICE_CANDIDATE","senderClientId":"e21d42cb7fe54890bb8700321bd47189"}"#;
        let msg = InboundMessage::parse(frame).unwrap();
        assert_eq!(msg.message_type, MessageType::IceCandidate);
        assert_eq!(msg.sender_client_id.as_deref(), Some("e21d42cb7fe54890bb8700321bd47189"));
        assert_eq!(msg.message_payload.as_deref(), Some("eyJjYW5kaWRhdGUiOiJ4In0="));
        assert_eq!(msg.status_response, None);
    }

    #[test]
    fn parses_the_js_status_fixture_with_string_code() {
        let frame = r#"{"messageType": "STATUS_RESPONSE","statusResponse":{"correlationId": "1697058567743","errorType": "InvalidArgumentException","statusCode": "400","success": false}}"#;
        let status = InboundMessage::parse(frame).unwrap().status_response.unwrap();
        assert_eq!(status.correlation_id, "1697058567743");
        assert_eq!(status.error_type.as_deref(), Some("InvalidArgumentException"));
        assert_eq!(status.status_code_number(), Some(400));
        assert_eq!(status.success, Some(false));
        assert_eq!(status.description, None);
    }

    #[test]
    fn pascal_case_keys_are_accepted() {
        let frame = r#"{"MessageType":"SDP_ANSWER","MessagePayload":"QQ==","SenderClientId":"v","StatusResponse":{"CorrelationId":"c","StatusCode":200}}"#;
        let msg = InboundMessage::parse(frame).unwrap();
        assert_eq!(msg.message_type, MessageType::SdpAnswer);
        assert_eq!(msg.sender_client_id.as_deref(), Some("v"));
        assert_eq!(msg.status_response.unwrap().status_code_number(), Some(200));
    }

    #[test]
    fn garbage_is_classified() {
        assert_eq!(InboundMessage::parse(""), Err(InboundError::Empty));
        assert_eq!(InboundMessage::parse("\0"), Err(InboundError::Empty));
        assert_eq!(InboundMessage::parse("not json"), Err(InboundError::NotJson));
        assert_eq!(InboundMessage::parse("[1,2]"), Err(InboundError::NotJson));
        assert_eq!(
            InboundMessage::parse(r#"{"message": "Endpoint request timed out", "connectionId":"Jzo5lcQFtjvCJcq="}"#),
            Err(InboundError::NotProtocol("Endpoint request timed out".into()))
        );
        assert_eq!(InboundMessage::parse(r#"{"messageType": 7}"#), Err(InboundError::WrongType("messageType")));
        assert_eq!(
            InboundMessage::parse(r#"{"messageType":"STATUS_RESPONSE","statusResponse":"x"}"#),
            Err(InboundError::WrongType("statusResponse"))
        );
        let unknown = InboundMessage::parse(r#"{"messageType":"NEW_THING","extra":{"a":1}}"#).unwrap();
        assert_eq!(unknown.message_type, MessageType::Unknown("NEW_THING".into()));
    }

    #[test]
    fn identifiers_beyond_the_spec_make_the_frame_invalid() {
        let long = "x".repeat(60_000);
        let sender =
            |id: &str| format!(r#"{{"messageType":"SDP_OFFER","senderClientId":"{id}","messagePayload":"QQ=="}}"#);
        let status =
            |id: &str| format!(r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{"correlationId":"{id}"}}}}"#);
        for (frame, field) in [
            (sender(&long), Field::SenderClientId),
            (sender(&"x".repeat(MAX_ID_LEN + 1)), Field::SenderClientId),
            (status(&long), Field::CorrelationId),
            (format!(r#"{{"messageType":"{long}"}}"#), Field::MessageType),
        ] {
            match InboundMessage::parse(&frame) {
                Err(InboundError::Invalid(ValidationError::TooLong { field: f, max: MAX_ID_LEN, .. })) => {
                    assert_eq!(f, field)
                }
                other => panic!("{field:?}: {other:?}"),
            }
        }
        for bad in ["a b", "a/b", "é", "a\\u0000b", "<script>"] {
            assert_eq!(
                InboundMessage::parse(&sender(bad)),
                Err(InboundError::Invalid(ValidationError::BadPattern(Field::SenderClientId))),
                "{bad}"
            );
            assert_eq!(
                InboundMessage::parse(&status(bad)),
                Err(InboundError::Invalid(ValidationError::BadPattern(Field::CorrelationId))),
                "{bad}"
            );
        }
        assert_eq!(
            InboundMessage::parse(&status("")),
            Err(InboundError::Invalid(ValidationError::Missing(Field::CorrelationId)))
        );
        let at_limit = "x".repeat(MAX_ID_LEN);
        assert_eq!(InboundMessage::parse(&sender(&at_limit)).unwrap().sender_client_id, Some(at_limit.clone()));
        assert_eq!(
            InboundMessage::parse(&status(&at_limit)).unwrap().status_response.unwrap().correlation_id,
            at_limit
        );
        assert_eq!(InboundMessage::parse(&sender("")).unwrap().sender_client_id, None, "empty reads as absent");
    }

    #[test]
    fn long_status_texts_are_cut_at_a_character_boundary() {
        let frame = format!(
            r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{"correlationId":"c","errorType":"{}","statusCode":"{}","description":"{}"}}}}"#,
            "E".repeat(70_000),
            "4".repeat(300),
            "é".repeat(60_000),
        );
        let status = InboundMessage::parse(&frame).unwrap().status_response.unwrap();
        assert_eq!(status.error_type.unwrap().len(), MAX_ERROR_TYPE_LEN);
        assert_eq!(status.status_code.unwrap().len(), MAX_ERROR_TYPE_LEN);
        assert_eq!(status.description.unwrap(), "é".repeat(MAX_DESCRIPTION_LEN / 2));
        let gateway = format!(r#"{{"message":"{}"}}"#, "m".repeat(100_000));
        match InboundMessage::parse(&gateway) {
            Err(InboundError::NotProtocol(text)) => assert_eq!(text.len(), MAX_DESCRIPTION_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn to_json_round_trips() {
        let msg = InboundMessage {
            message_type: MessageType::StatusResponse,
            sender_client_id: None,
            message_payload: None,
            status_response: Some(StatusResponse {
                correlation_id: "c".into(),
                error_type: Some("InvalidArgumentException".into()),
                status_code: Some("400".into()),
                description: Some("bad".into()),
                success: None,
            }),
        };
        assert_eq!(InboundMessage::parse(&msg.to_json()).unwrap(), msg);
        let go_away = InboundMessage {
            message_type: MessageType::GoAway,
            sender_client_id: None,
            message_payload: None,
            status_response: None,
        };
        assert_eq!(go_away.to_json(), r#"{"messageType":"GO_AWAY"}"#);
    }

    /// Not a check: prints how long parsing 100,000 typical ICE_CANDIDATE
    /// frames takes. Run optimised: `cargo test --release --lib parse_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn parse_speed() {
        let candidate = r#"{"candidate":"candidate:1806692611 1 udp 8199935 34.217.22.70 63214 typ relay raddr 44.225.74.152 rport 54751 generation 0 ufrag qwVB network-id 3 network-cost 50","sdpMid":"1","sdpMLineIndex":1}"#;
        let frame = format!(
            r#"{{"messagePayload":"{}","messageType":"ICE_CANDIDATE","senderClientId":"e21d42cb7fe54890bb8700321bd47189"}}"#,
            super::super::encode_payload(candidate.as_bytes())
        );
        let start = std::time::Instant::now();
        for _ in 0..100_000 {
            let message = InboundMessage::parse(std::hint::black_box(&frame)).unwrap();
            std::hint::black_box(message);
        }
        let elapsed = start.elapsed();
        println!("100,000 frames of {} bytes parsed in {elapsed:?} ({:?} each)", frame.len(), elapsed / 100_000);
    }
}
