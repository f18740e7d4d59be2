//! `messagePayload` contents (spec §5): base64 over JSON of an
//! `RTCSessionDescriptionInit` or an `RTCIceCandidateInit`.

use super::{JsonObject, get_ci};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use std::fmt;

/// Encodes payload bytes as padded standard base64.
pub fn encode_payload(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a base64 `messagePayload`.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, PayloadError> {
    STANDARD.decode(text.trim()).map_err(|_| PayloadError::NotBase64)
}

/// Why a decoded payload is not the SDP or candidate JSON it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload is not valid base64.
    NotBase64,
    /// The decoded payload is not a JSON object.
    NotJsonObject,
    /// A required key is absent.
    MissingField(&'static str),
    /// A key has a value of the wrong JSON type.
    WrongType(&'static str),
    /// `type` is neither `offer` nor `answer`.
    UnknownSdpType(String),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::NotBase64 => f.write_str("payload is not valid base64"),
            PayloadError::NotJsonObject => f.write_str("payload is not a JSON object"),
            PayloadError::MissingField(name) => write!(f, "payload has no {name}"),
            PayloadError::WrongType(name) => write!(f, "payload field {name} has the wrong type"),
            PayloadError::UnknownSdpType(t) => {
                write!(f, "payload type {t:?} is neither offer nor answer")
            }
        }
    }
}

impl std::error::Error for PayloadError {}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(PayloadError::NotJsonObject),
    }
}

fn required_str(map: &Map<String, Value>, key: &'static str) -> Result<String, PayloadError> {
    match get_ci(map, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(PayloadError::WrongType(key)),
        None => Err(PayloadError::MissingField(key)),
    }
}

/// `type` of a session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpType {
    /// `"offer"`.
    Offer,
    /// `"answer"`.
    Answer,
}

impl SdpType {
    /// The JSON value: `"offer"` or `"answer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpType::Offer => "offer",
            SdpType::Answer => "answer",
        }
    }
}

/// `{"type": "offer"|"answer", "sdp": "v=0\r\n..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `type`.
    pub sdp_type: SdpType,
    /// `sdp`: the session description text.
    pub sdp: String,
}

impl SessionDescription {
    /// The JSON text of the payload (before base64).
    pub fn to_json(&self) -> String {
        JsonObject::with_capacity(self.sdp.len() + 32)
            .string("type", self.sdp_type.as_str())
            .string("sdp", &self.sdp)
            .finish()
    }

    /// Parses decoded payload bytes; both `type` and `sdp` are required.
    pub fn parse(bytes: &[u8]) -> Result<SessionDescription, PayloadError> {
        let map = object(bytes)?;
        let sdp_type = match required_str(&map, "type")?.as_str() {
            "offer" => SdpType::Offer,
            "answer" => SdpType::Answer,
            other => return Err(PayloadError::UnknownSdpType(other.to_owned())),
        };
        Ok(SessionDescription { sdp_type, sdp: required_str(&map, "sdp")? })
    }
}

/// `{"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// `candidate`: the candidate line, e.g. `candidate:1 1 udp ...`.
    pub candidate: String,
    /// `sdpMid`: the media stream identification tag.
    pub sdp_mid: Option<String>,
    /// `sdpMLineIndex`: the index of the media description.
    pub sdp_mline_index: Option<u16>,
    /// `usernameFragment`: the ICE ufrag.
    pub username_fragment: Option<String>,
}

impl IceCandidate {
    /// The JSON text of the payload (before base64); absent optional fields are omitted.
    pub fn to_json(&self) -> String {
        let mut json = JsonObject::with_capacity(self.candidate.len() + 96);
        json.string("candidate", &self.candidate);
        if let Some(mid) = &self.sdp_mid {
            json.string("sdpMid", mid);
        }
        if let Some(index) = self.sdp_mline_index {
            json.raw("sdpMLineIndex", &index.to_string());
        }
        if let Some(ufrag) = &self.username_fragment {
            json.string("usernameFragment", ufrag);
        }
        json.finish()
    }

    /// Parses decoded payload bytes; `candidate` is required, the rest optional
    /// (null counts as absent).
    pub fn parse(bytes: &[u8]) -> Result<IceCandidate, PayloadError> {
        let map = object(bytes)?;
        let optional_str = |key: &'static str| match get_ci(&map, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(PayloadError::WrongType(key)),
        };
        let sdp_mline_index = match get_ci(&map, "sdpMLineIndex") {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or(PayloadError::WrongType("sdpMLineIndex"))?)
            }
        };
        Ok(IceCandidate {
            candidate: required_str(&map, "candidate")?,
            sdp_mid: optional_str("sdpMid")?,
            sdp_mline_index,
            username_fragment: optional_str("usernameFragment")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_js_fixture_payloads() {
        let sdp = decode_payload("eyJzZHAiOiJvZmZlcj0gdHJ1ZVxudmlkZW89IHRydWUiLCJ0eXBlIjoib2ZmZXIifQ==").unwrap();
        let sdp = SessionDescription::parse(&sdp).unwrap();
        assert_eq!(sdp, SessionDescription { sdp_type: SdpType::Offer, sdp: "offer= true\nvideo= true".into() });
        let ice =
            decode_payload("eyJjYW5kaWRhdGUiOiJ1cGQgMTAuMTExLjM0Ljg4Iiwic2RwTWlkIjoiMSIsInNkcE1MaW5lSW5kZXgiOjF9")
                .unwrap();
        let ice = IceCandidate::parse(&ice).unwrap();
        assert_eq!(ice.candidate, "upd 10.111.34.88");
        assert_eq!(ice.sdp_mid.as_deref(), Some("1"));
        assert_eq!(ice.sdp_mline_index, Some(1));
        assert_eq!(ice.username_fragment, None);
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let sdp = SessionDescription { sdp_type: SdpType::Answer, sdp: "v=0\r\no=- 1 2 IN IP4 \"q\"\r\n".into() };
        let wire = encode_payload(sdp.to_json().as_bytes());
        assert_eq!(SessionDescription::parse(&decode_payload(&wire).unwrap()).unwrap(), sdp);
        let ice = IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: Some("uf".into()),
        };
        assert_eq!(IceCandidate::parse(ice.to_json().as_bytes()).unwrap(), ice);
    }

    #[test]
    fn bad_payloads_are_reported() {
        assert_eq!(decode_payload("!!"), Err(PayloadError::NotBase64));
        assert_eq!(SessionDescription::parse(b"[]"), Err(PayloadError::NotJsonObject));
        assert_eq!(SessionDescription::parse(br#"{"sdp":"x"}"#), Err(PayloadError::MissingField("type")));
        assert_eq!(
            SessionDescription::parse(br#"{"type":"pranswer","sdp":"x"}"#),
            Err(PayloadError::UnknownSdpType("pranswer".into()))
        );
        assert_eq!(IceCandidate::parse(br#"{"candidate":1}"#), Err(PayloadError::WrongType("candidate")));
        assert_eq!(
            IceCandidate::parse(br#"{"candidate":"c","sdpMLineIndex":-1}"#),
            Err(PayloadError::WrongType("sdpMLineIndex"))
        );
        assert_eq!(IceCandidate::parse(br#"{"candidate":"c","sdpMid":null}"#).unwrap().sdp_mid, None);
    }
}
