//! Client → service requests (spec §3).

use super::validate::{Field, ValidationError, validate_id, validate_payload};
use super::{JsonObject, get_ci};
use serde_json::Value;

/// Which end of the channel a connection is (spec §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The single master of a channel (the camera); has no client id on the wire.
    Master,
    /// One of up to 10 viewers, identified by its `X-Amz-ClientId`.
    Viewer,
}

/// The `action` of an outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `SDP_OFFER`: send a session description offer.
    SdpOffer,
    /// `SDP_ANSWER`: send a session description answer.
    SdpAnswer,
    /// `ICE_CANDIDATE`: send an ICE candidate.
    IceCandidate,
}

impl Action {
    /// The wire name, e.g. `SDP_OFFER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SdpOffer => "SDP_OFFER",
            Action::SdpAnswer => "SDP_ANSWER",
            Action::IceCandidate => "ICE_CANDIDATE",
        }
    }

    /// Parses a wire name exactly as the service spells it.
    pub fn parse(value: &str) -> Option<Action> {
        match value {
            "SDP_OFFER" => Some(Action::SdpOffer),
            "SDP_ANSWER" => Some(Action::SdpAnswer),
            "ICE_CANDIDATE" => Some(Action::IceCandidate),
            _ => None,
        }
    }
}

/// A validated outbound request, ready to be written as one text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// What the request is.
    pub action: Action,
    /// The target viewer; always `Some` for a master and `None` for a viewer.
    pub recipient_client_id: Option<String>,
    /// Base64 text, 1–10,000 characters.
    pub message_payload: String,
    /// Echoed by the service in a STATUS_RESPONSE if the request fails; 1–256
    /// characters of `[a-zA-Z0-9_.-]`.
    pub correlation_id: Option<String>,
}

impl OutboundMessage {
    /// Builds a request after checking every constraint of spec §3.1 for the
    /// sender's `role`: a master must name a recipient, a viewer must not.
    pub fn new(
        role: Role,
        action: Action,
        recipient_client_id: Option<&str>,
        message_payload: &str,
        correlation_id: Option<&str>,
    ) -> Result<OutboundMessage, ValidationError> {
        match (role, recipient_client_id) {
            (Role::Master, None) => return Err(ValidationError::MasterWithoutRecipient),
            (Role::Master, Some(r)) => validate_id(Field::RecipientClientId, r)?,
            (Role::Viewer, Some(_)) => return Err(ValidationError::ViewerWithRecipient),
            (Role::Viewer, None) => {}
        }
        validate_payload(message_payload)?;
        if let Some(c) = correlation_id {
            validate_id(Field::CorrelationId, c)?;
        }
        Ok(OutboundMessage {
            action,
            recipient_client_id: recipient_client_id.map(str::to_owned),
            message_payload: message_payload.to_owned(),
            correlation_id: correlation_id.map(str::to_owned),
        })
    }

    /// The frame text, with the JS SDK's camelCase keys; absent keys are omitted.
    pub fn to_json(&self) -> String {
        let mut json = JsonObject::with_capacity(self.message_payload.len() + 96);
        json.string("action", self.action.as_str());
        if let Some(r) = &self.recipient_client_id {
            json.string("recipientClientId", r);
        }
        json.string("messagePayload", &self.message_payload);
        if let Some(c) = &self.correlation_id {
            json.string("correlationId", c);
        }
        json.finish()
    }
}

/// An outbound request as the service receives it, before validation: every
/// field as found (either key casing), so that a receiver can still echo the
/// `correlationId` when another field is wrong. Used by the emulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOutbound {
    /// `action`, unchecked.
    pub action: Option<String>,
    /// `recipientClientId`, unchecked.
    pub recipient_client_id: Option<String>,
    /// `messagePayload`, unchecked.
    pub message_payload: Option<String>,
    /// `correlationId`, unchecked.
    pub correlation_id: Option<String>,
}

impl RawOutbound {
    /// Reads a frame; `None` if it is not a JSON object. Non-string values of
    /// known keys count as absent; unknown keys are ignored.
    pub fn parse(text: &str) -> Option<RawOutbound> {
        let Value::Object(map) = serde_json::from_str::<Value>(text).ok()? else {
            return None;
        };
        let field = |key: &str| get_ci(&map, key).and_then(Value::as_str).map(str::to_owned);
        Some(RawOutbound {
            action: field("action"),
            recipient_client_id: field("recipientClientId"),
            message_payload: field("messagePayload"),
            correlation_id: field("correlationId"),
        })
    }

    /// Validates the request as the service does for a sender of `role`.
    /// A viewer's `recipientClientId` is ignored, as the service ignores it
    /// (spec §3.1); an empty one from a viewer (the C SDK sends `""`) is accepted.
    pub fn validate(&self, role: Role) -> Result<OutboundMessage, ValidationError> {
        let action_text = self.action.as_deref().unwrap_or("");
        if action_text.is_empty() {
            return Err(ValidationError::Missing(Field::Action));
        }
        let action =
            Action::parse(action_text).ok_or_else(|| ValidationError::UnknownAction(action_text.to_owned()))?;
        let recipient = match role {
            Role::Master => self.recipient_client_id.as_deref().filter(|r| !r.is_empty()),
            Role::Viewer => None,
        };
        OutboundMessage::new(
            role,
            action,
            recipient,
            self.message_payload.as_deref().unwrap_or(""),
            self.correlation_id.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "eyJzZHAiOiJvZmZlcj0gdHJ1ZVxudmlkZW89IHRydWUiLCJ0eXBlIjoib2ZmZXIifQ==";

    #[test]
    fn frames_match_the_js_sdk_fixtures() {
        let viewer = OutboundMessage::new(Role::Viewer, Action::SdpOffer, None, PAYLOAD, None).unwrap();
        assert_eq!(viewer.to_json(), format!(r#"{{"action":"SDP_OFFER","messagePayload":"{PAYLOAD}"}}"#));
        let master =
            OutboundMessage::new(Role::Master, Action::SdpOffer, Some("TestClientId"), PAYLOAD, Some("c-1")).unwrap();
        assert_eq!(
            master.to_json(),
            format!(
                r#"{{"action":"SDP_OFFER","recipientClientId":"TestClientId","messagePayload":"{PAYLOAD}","correlationId":"c-1"}}"#
            )
        );
    }

    #[test]
    fn role_rules_for_the_recipient() {
        assert_eq!(
            OutboundMessage::new(Role::Master, Action::SdpAnswer, None, PAYLOAD, None),
            Err(ValidationError::MasterWithoutRecipient)
        );
        assert_eq!(
            OutboundMessage::new(Role::Viewer, Action::SdpAnswer, Some("m"), PAYLOAD, None),
            Err(ValidationError::ViewerWithRecipient)
        );
        assert_eq!(
            OutboundMessage::new(Role::Master, Action::SdpAnswer, Some("bad id"), PAYLOAD, None),
            Err(ValidationError::BadPattern(Field::RecipientClientId))
        );
        assert_eq!(
            OutboundMessage::new(Role::Viewer, Action::IceCandidate, None, PAYLOAD, Some("")),
            Err(ValidationError::Missing(Field::CorrelationId))
        );
    }

    #[test]
    fn raw_parse_accepts_both_casings_and_ignores_unknown_keys() {
        let c_sdk = format!(
            "{{\n\t\"action\": \"SDP_ANSWER\",\n\t\"RecipientClientId\": \"v1\",\n\t\"MessagePayload\": \"{PAYLOAD}\",\n\t\"CorrelationId\": \"k\",\n\t\"IceServerList\": []\n}}"
        );
        let raw = RawOutbound::parse(&c_sdk).unwrap();
        assert_eq!(raw.recipient_client_id.as_deref(), Some("v1"));
        assert_eq!(raw.correlation_id.as_deref(), Some("k"));
        let msg = raw.validate(Role::Master).unwrap();
        assert_eq!(msg.action, Action::SdpAnswer);
        // A viewer's recipient (here the C SDK's empty one) is ignored.
        let viewer = RawOutbound::parse(&format!(
            r#"{{"action":"ICE_CANDIDATE","RecipientClientId":"","MessagePayload":"{PAYLOAD}"}}"#
        ))
        .unwrap();
        assert_eq!(viewer.validate(Role::Viewer).unwrap().recipient_client_id, None);
        assert!(RawOutbound::parse("[1]").is_none());
        assert!(RawOutbound::parse("nope").is_none());
    }

    #[test]
    fn raw_validate_reports_the_first_broken_field() {
        let raw = RawOutbound::parse(r#"{"action":"HELLO","messagePayload":"QQ==","correlationId":"c"}"#).unwrap();
        assert_eq!(raw.validate(Role::Viewer), Err(ValidationError::UnknownAction("HELLO".into())));
        let raw = RawOutbound::parse(r#"{"messagePayload":"QQ=="}"#).unwrap();
        assert_eq!(raw.validate(Role::Viewer), Err(ValidationError::Missing(Field::Action)));
        let raw = RawOutbound::parse(r#"{"action":"SDP_OFFER","messagePayload":"QQ=="}"#).unwrap();
        assert_eq!(raw.validate(Role::Master), Err(ValidationError::MasterWithoutRecipient));
    }
}
