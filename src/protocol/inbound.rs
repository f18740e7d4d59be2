//! Service → client messages (spec §4).

use super::JsonObject;
use super::fields::{Keep, ReadObject, Seen, SkipObject, Slot, ValueSeed, next_found, read_object};
use super::validate::{Field, MAX_DESCRIPTION_LEN, MAX_ERROR_TYPE_LEN, MAX_ID_LEN, ValidationError, validate_id};
use serde::de::MapAccess;
use std::fmt;

/// The `messageType` of an inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// `SDP_OFFER`: a session description offer.
    SdpOffer,
    /// `SDP_ANSWER`: a session description answer.
    SdpAnswer,
    /// `ICE_CANDIDATE`: a trickled ICE candidate.
    IceCandidate,
    /// `GO_AWAY`: the service is about to close the connection.
    GoAway,
    /// `RECONNECT_ICE_SERVER`: the ICE server credentials should be refreshed.
    ReconnectIceServer,
    /// `STATUS_RESPONSE`: the outcome of an earlier request (see [`StatusResponse`]).
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
    /// What the message is.
    pub message_type: MessageType,
    /// The viewer that sent it; absent on master → viewer deliveries (spec §4.2).
    /// As parsed: 1–256 characters of `[a-zA-Z0-9_.-]`; an empty one reads as absent.
    pub sender_client_id: Option<String>,
    /// Base64 text as received; decode with [`super::decode_payload`].
    pub message_payload: Option<String>,
    /// The `statusResponse` object, when present.
    pub status_response: Option<StatusResponse>,
}

/// Why a frame was not a protocol message; the client logs it and carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

/// The top-level keys a frame is read for.
#[derive(Clone, Copy)]
enum TopKey {
    MessageType,
    SenderClientId,
    MessagePayload,
    StatusResponse,
    /// The text of an API-Gateway error frame, which has no `messageType`.
    Message,
}

const TOP: [(&str, TopKey); 5] = [
    ("messageType", TopKey::MessageType),
    ("senderClientId", TopKey::SenderClientId),
    ("messagePayload", TopKey::MessagePayload),
    ("statusResponse", TopKey::StatusResponse),
    ("message", TopKey::Message),
];

/// The keys of `statusResponse` that are read.
#[derive(Clone, Copy)]
enum StatusKey {
    CorrelationId,
    ErrorType,
    StatusCode,
    Description,
    Success,
}

const STATUS: [(&str, StatusKey); 5] = [
    ("correlationId", StatusKey::CorrelationId),
    ("errorType", StatusKey::ErrorType),
    ("statusCode", StatusKey::StatusCode),
    ("description", StatusKey::Description),
    ("success", StatusKey::Success),
];

/// The fields of a frame as read, before they are checked.
#[derive(Default)]
struct Frame<'de> {
    message_type: Slot<'de, Seen<'de>>,
    sender_client_id: Slot<'de, Seen<'de>>,
    message_payload: Slot<'de, Seen<'de>>,
    status_response: Slot<'de, Seen<'de, Result<StatusResponse, InboundError>>>,
    message: Slot<'de, Seen<'de>>,
}

/// Reads the top-level object of a frame into a [`Frame`].
struct FrameObject;

impl<'de> ReadObject<'de> for FrameObject {
    type Output = Frame<'de>;

    fn read<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame<'de>, A::Error> {
        let mut frame = Frame::default();
        while let Some(found) = next_found(&mut map, &TOP)? {
            let (slot, keep) = match found.key {
                TopKey::StatusResponse => {
                    frame.status_response.read(&mut map, found, ValueSeed(Keep::Nothing, StatusObject))?;
                    continue;
                }
                TopKey::MessageType => (&mut frame.message_type, Keep::Id),
                TopKey::SenderClientId => (&mut frame.sender_client_id, Keep::Id),
                TopKey::MessagePayload => (&mut frame.message_payload, Keep::Whole),
                TopKey::Message => (&mut frame.message, Keep::Cut(MAX_DESCRIPTION_LEN)),
            };
            slot.read(&mut map, found, ValueSeed(keep, SkipObject))?;
        }
        Ok(frame)
    }
}

/// Reads a `statusResponse` object and checks it: the check's outcome is
/// reported only if this object is the one the frame keeps.
struct StatusObject;

impl<'de> ReadObject<'de> for StatusObject {
    type Output = Result<StatusResponse, InboundError>;

    fn read<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Output, A::Error> {
        let [mut correlation_id, mut error_type, mut status_code, mut description, mut success] =
            std::array::from_fn(|_| Slot::default());
        while let Some(found) = next_found(&mut map, &STATUS)? {
            let (slot, keep) = match found.key {
                StatusKey::CorrelationId => (&mut correlation_id, Keep::Id),
                StatusKey::ErrorType => (&mut error_type, Keep::Cut(MAX_ERROR_TYPE_LEN)),
                StatusKey::StatusCode => (&mut status_code, Keep::Cut(MAX_ERROR_TYPE_LEN)),
                StatusKey::Description => (&mut description, Keep::Cut(MAX_DESCRIPTION_LEN)),
                StatusKey::Success => (&mut success, Keep::Nothing),
            };
            slot.read(&mut map, found, ValueSeed(keep, SkipObject))?;
        }
        Ok(status_response([correlation_id, error_type, status_code, description, success].map(Slot::into_value)))
    }
}

/// A `statusResponse` from its fields as read, in the order of [`STATUS`].
fn status_response(fields: [Option<Seen<'_>>; 5]) -> Result<StatusResponse, InboundError> {
    let [correlation_id, error_type, status_code, description, success] = fields;
    let correlation_id = match correlation_id {
        Some(Seen::Text(id)) => {
            validate_id(Field::CorrelationId, &id).map_err(InboundError::Invalid)?;
            id.into_owned()
        }
        Some(Seen::LongId(len)) => return Err(too_long(Field::CorrelationId, len)),
        _ => return Err(InboundError::WrongType("statusResponse.correlationId")),
    };
    Ok(StatusResponse {
        correlation_id,
        error_type: error_type.and_then(Seen::text),
        status_code: status_code.and_then(Seen::text),
        description: description.and_then(Seen::text),
        success: match success {
            Some(Seen::Bool(flag)) => Some(flag),
            _ => None,
        },
    })
}

/// An identifier longer than the spec allows.
fn too_long(field: Field, len: usize) -> InboundError {
    InboundError::Invalid(ValidationError::TooLong { field, max: MAX_ID_LEN, len })
}

/// `senderClientId`: absent, or a valid id, from a string or a number (an
/// empty one, or any other JSON value, reads as absent).
fn sender(seen: Option<Seen<'_>>) -> Result<Option<String>, InboundError> {
    if let Some(Seen::LongId(len)) = seen {
        return Err(too_long(Field::SenderClientId, len));
    }
    match seen.and_then(Seen::text) {
        Some(id) if !id.is_empty() => {
            validate_id(Field::SenderClientId, &id).map_err(InboundError::Invalid)?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

impl Frame<'_> {
    /// The message, or why the frame is not one; the checks run in a fixed
    /// order (`messageType`, `statusResponse`, `senderClientId`), whatever the
    /// order of the keys.
    fn into_message(self) -> Result<InboundMessage, InboundError> {
        let message_type = match self.message_type.into_value() {
            None => {
                let message = self.message.into_value().and_then(Seen::text).unwrap_or_default();
                return Err(InboundError::NotProtocol(message));
            }
            Some(Seen::Text(name)) => MessageType::parse(&name),
            Some(Seen::LongId(len)) => return Err(too_long(Field::MessageType, len)),
            Some(_) => return Err(InboundError::WrongType("messageType")),
        };
        let status_response = match self.status_response.into_value() {
            None | Some(Seen::Null) => None,
            Some(Seen::Object(status)) => Some(status?),
            Some(_) => return Err(InboundError::WrongType("statusResponse")),
        };
        Ok(InboundMessage {
            message_type,
            sender_client_id: sender(self.sender_client_id.into_value())?,
            message_payload: self.message_payload.into_value().and_then(Seen::text),
            status_response,
        })
    }
}

impl InboundMessage {
    /// Parses one text frame (spec §4.1, §4.3).
    ///
    /// Keys match ignoring ASCII case; a string field may also be a number
    /// (read as its decimal text); unknown keys, of any JSON type, are skipped
    /// without being kept; trailing NULs are ignored. When several keys match
    /// one name, the exact camelCase spelling wins, else the spelling first in
    /// byte order; of repeated identical keys, the last. Allocates only what
    /// the message keeps (no JSON tree is built); a frame that is not JSON,
    /// including one nested deeper than 128 levels, is [`InboundError::NotJson`].
    pub fn parse(text: &str) -> Result<InboundMessage, InboundError> {
        if text.trim_matches(|c: char| c.is_whitespace() || c == '\0').is_empty() {
            return Err(InboundError::Empty);
        }
        read_object(text.trim_end_matches('\0'), FrameObject).map_err(|_| InboundError::NotJson)?.into_message()
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

    #[test]
    fn every_key_casing_matches() {
        for (message_type, sender, status, correlation) in [
            ("messageType", "senderClientId", "statusResponse", "correlationId"),
            ("MessageType", "SenderClientId", "StatusResponse", "CorrelationId"),
            ("MESSAGETYPE", "senderclientid", "STATUSRESPONSE", "correlationID"),
        ] {
            let frame =
                format!(r#"{{"{message_type}":"STATUS_RESPONSE","{sender}":"v","{status}":{{"{correlation}":"c"}}}}"#);
            let msg = InboundMessage::parse(&frame).unwrap();
            assert_eq!(msg.message_type, MessageType::StatusResponse, "{frame}");
            assert_eq!(msg.sender_client_id.as_deref(), Some("v"), "{frame}");
            assert_eq!(msg.status_response.unwrap().correlation_id, "c", "{frame}");
        }
        let escaped = InboundMessage::parse(r#"{"message\u0054ype":"GO_AWAY"}"#).unwrap();
        assert_eq!(escaped.message_type, MessageType::GoAway, "a key spelled with an escape");
    }

    #[test]
    fn unknown_keys_of_every_type_are_skipped() {
        for value in [
            "null",
            "true",
            "false",
            "0",
            "-1.5e-3",
            "18446744073709551616",
            r#""text""#,
            r#""esc\u00e9\n""#,
            "[]",
            r#"[1,"a",[null],{"b":{}}]"#,
            "{}",
            r#"{"messageType":7,"senderClientId":{},"a":[{"b":[]}]}"#,
        ] {
            for frame in [
                format!(r#"{{"unknown":{value},"messageType":"SDP_OFFER","senderClientId":"v"}}"#),
                format!(r#"{{"messageType":"SDP_OFFER","senderClientId":"v","unknown":{value}}}"#),
                format!(
                    r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{"unknown":{value},"correlationId":"c"}}}}"#
                ),
            ] {
                let msg = InboundMessage::parse(&frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
                assert!(msg.sender_client_id.is_some() || msg.status_response.is_some(), "{frame}");
            }
        }
        // Skipped values are still checked as JSON, as a parsed tree checks them.
        for value in ["1e999", r#""\ud800""#, r#""\x""#, "[1,]", "{\"a\"}", "tru"] {
            let frame = format!(r#"{{"messageType":"SDP_OFFER","unknown":{value}}}"#);
            assert_eq!(InboundMessage::parse(&frame), Err(InboundError::NotJson), "{frame}");
        }
    }

    #[test]
    fn numbers_read_as_their_decimal_text() {
        let frame = r#"{"messageType":"STATUS_RESPONSE","senderClientId":123,"messagePayload":-7,"statusResponse":{"correlationId":"c","errorType":1.5,"statusCode":404,"description":-0}}"#;
        let msg = InboundMessage::parse(frame).unwrap();
        assert_eq!(msg.sender_client_id.as_deref(), Some("123"));
        assert_eq!(msg.message_payload.as_deref(), Some("-7"));
        let status = msg.status_response.unwrap();
        assert_eq!(status.error_type.as_deref(), Some("1.5"));
        assert_eq!(status.status_code_number(), Some(404));
        assert_eq!(status.description.as_deref(), Some("-0.0"));
        assert_eq!(InboundMessage::parse(r#"{"message":503}"#), Err(InboundError::NotProtocol("503".into())));
        // Where a number is not read as text, it is the wrong type, or absent.
        assert_eq!(
            InboundMessage::parse(r#"{"messageType":"STATUS_RESPONSE","statusResponse":{"correlationId":1}}"#),
            Err(InboundError::WrongType("statusResponse.correlationId"))
        );
        let other_types =
            r#"{"messageType":"SDP_OFFER","senderClientId":true,"messagePayload":[1],"statusResponse":null}"#;
        let msg = InboundMessage::parse(other_types).unwrap();
        assert_eq!((msg.sender_client_id, msg.message_payload, msg.status_response), (None, None, None));
    }

    #[test]
    fn repeated_keys_keep_the_exact_spelling_then_the_last() {
        let parse = |frame: &str| InboundMessage::parse(frame).map(|m| m.message_type);
        // The last of identical keys, whatever the earlier ones held.
        assert_eq!(parse(r#"{"messageType":7,"messageType":"GO_AWAY"}"#), Ok(MessageType::GoAway));
        assert_eq!(parse(r#"{"messageType":"GO_AWAY","messageType":7}"#), Err(InboundError::WrongType("messageType")));
        // The exact camelCase spelling over any other, before or after it.
        assert_eq!(parse(r#"{"MessageType":7,"messageType":"GO_AWAY"}"#), Ok(MessageType::GoAway));
        assert_eq!(parse(r#"{"messageType":"GO_AWAY","MessageType":7}"#), Ok(MessageType::GoAway));
        // Otherwise the spelling first in byte order (uppercase first).
        assert_eq!(parse(r#"{"messagetype":7,"MessageType":"GO_AWAY"}"#), Ok(MessageType::GoAway));
        assert_eq!(parse(r#"{"MessageType":"GO_AWAY","messagetype":7}"#), Ok(MessageType::GoAway));
        assert_eq!(parse(r#"{"MESSAGETYPE":"SDP_OFFER","MessageType":"GO_AWAY"}"#), Ok(MessageType::SdpOffer));
        // Inside statusResponse too, and a dropped value is never checked.
        let status = |inner: &str| {
            let frame = format!(r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{{inner}}}}}"#);
            InboundMessage::parse(&frame).map(|m| m.status_response.unwrap())
        };
        assert_eq!(status(r#""correlationId":"a b","correlationId":"c""#).unwrap().correlation_id, "c");
        assert_eq!(status(r#""correlationId":"c","CorrelationId":"a b""#).unwrap().correlation_id, "c");
        let last = status(r#""correlationId":"c","success":true,"success":"yes","statusCode":1,"statusCode":"2""#);
        assert_eq!(last.as_ref().map(|s| (s.success, s.status_code.as_deref())), Ok((None, Some("2"))));
        let frame =
            r#"{"messageType":"STATUS_RESPONSE","statusResponse":{"correlationId":"a b"},"statusResponse":null}"#;
        assert_eq!(InboundMessage::parse(frame).unwrap().status_response, None);
        let frame = r#"{"senderClientId":"a b","messageType":"GO_AWAY","senderClientId":""}"#;
        assert_eq!(InboundMessage::parse(frame).unwrap().sender_client_id, None);
    }

    #[test]
    fn trailing_nuls_and_whitespace_are_tolerated() {
        assert_eq!(
            InboundMessage::parse("{\"messageType\":\"GO_AWAY\"}\0\0").unwrap().message_type,
            MessageType::GoAway
        );
        assert_eq!(
            InboundMessage::parse(" {\"messageType\":\"GO_AWAY\"} \n").unwrap().message_type,
            MessageType::GoAway
        );
        assert_eq!(InboundMessage::parse(" \0\n\0"), Err(InboundError::Empty));
        assert_eq!(InboundMessage::parse("{\"messageType\":\"GO_AWAY\"}\0 "), Err(InboundError::NotJson));
        assert_eq!(InboundMessage::parse("{\"messageType\":\"GO_AWAY\"} x"), Err(InboundError::NotJson));
    }

    #[test]
    fn deep_nesting_is_not_json_without_exhausting_the_stack() {
        let nested =
            |depth: usize| format!(r#"{{"messageType":"GO_AWAY","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        // serde_json's limit: 128 levels, the frame's own object included.
        assert!(InboundMessage::parse(&nested(126)).is_ok());
        assert_eq!(InboundMessage::parse(&nested(127)), Err(InboundError::NotJson));
        let status = |depth: usize| {
            format!(
                r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{"correlationId":"c","x":{}1{}}}}}"#,
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            )
        };
        assert!(InboundMessage::parse(&status(125)).is_ok());
        assert_eq!(InboundMessage::parse(&status(126)), Err(InboundError::NotJson));
        for hostile in [
            "[".repeat(64 * 1024),
            format!(r#"{{"messageType":"GO_AWAY","x":{}"#, "[".repeat(64 * 1024)),
            nested(32 * 1024),
        ] {
            assert_eq!(InboundMessage::parse(&hostile), Err(InboundError::NotJson));
        }
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
