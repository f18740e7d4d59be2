//! Client configuration.

use super::ClientError;
use crate::protocol::{Role, validate_channel_arn, validate_client_id};
use std::time::Duration;

/// Everything a client needs to reach one signaling channel.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub role: Role,
    /// `arn:aws:kinesisvideo:REGION:ACCOUNT:channel/NAME/EPOCH`.
    pub channel_arn: String,
    /// The viewer's `X-Amz-ClientId`; must be `None` for a master.
    pub client_id: Option<String>,
    /// The channel's data-plane endpoint for this role: `ws://host:port` or
    /// `wss://host` (no query string).
    pub endpoint: String,
    /// AWS region of the channel, e.g. `us-west-2`.
    pub region: String,
    /// Upper bound for one connect (TCP + TLS + WebSocket handshake).
    pub connect_timeout: Duration,
    /// Sends that may wait for the socket at once; one more is refused.
    pub send_queue_capacity: usize,
    /// Inbound frames longer than this are logged and skipped.
    pub max_inbound_frame_len: usize,
}

impl ClientConfig {
    /// A master's configuration with defaults for the rest.
    pub fn master(channel_arn: &str, endpoint: &str) -> ClientConfig {
        ClientConfig {
            role: Role::Master,
            channel_arn: channel_arn.to_owned(),
            client_id: None,
            endpoint: endpoint.to_owned(),
            region: region_of_arn(channel_arn).unwrap_or("us-west-2").to_owned(),
            connect_timeout: Duration::from_secs(5),
            send_queue_capacity: 256,
            max_inbound_frame_len: 64 * 1024,
        }
    }

    /// A viewer's configuration with defaults for the rest.
    pub fn viewer(channel_arn: &str, client_id: &str, endpoint: &str) -> ClientConfig {
        ClientConfig {
            role: Role::Viewer,
            client_id: Some(client_id.to_owned()),
            ..ClientConfig::master(channel_arn, endpoint)
        }
    }

    /// Checks the configuration against the spec before anything is opened.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |text: String| Err(ClientError::InvalidConfig(text));
        if let Err(e) = validate_channel_arn(&self.channel_arn) {
            return invalid(e.to_string());
        }
        match (self.role, &self.client_id) {
            (Role::Viewer, None) => return invalid("a viewer needs a client id".into()),
            (Role::Viewer, Some(id)) => {
                if let Err(e) = validate_client_id(id) {
                    return invalid(e.to_string());
                }
            }
            (Role::Master, Some(_)) => {
                return invalid("a master connects without a client id; leave it unset".into());
            }
            (Role::Master, None) => {}
        }
        let scheme_ok = self.endpoint.starts_with("ws://") || self.endpoint.starts_with("wss://");
        if !scheme_ok || self.endpoint.contains('?') || self.endpoint.contains(char::is_whitespace) {
            return invalid(format!(
                "endpoint {:?} must be a ws:// or wss:// URL without a query string",
                self.endpoint
            ));
        }
        let region_ok = !self.region.is_empty()
            && self.region.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !region_ok {
            return invalid(format!("region {:?} must match [a-z0-9-]+", self.region));
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect timeout must be above zero".into());
        }
        if self.send_queue_capacity == 0 {
            return invalid("send queue capacity must be above zero".into());
        }
        Ok(())
    }
}

/// The region field of a channel ARN, if it has one.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/demo/1";

    #[test]
    fn defaults_take_the_region_from_the_arn() {
        let config = ClientConfig::viewer(ARN, "v1", "ws://127.0.0.1:1");
        assert_eq!(config.region, "eu-west-1");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn rejects_what_the_service_would() {
        let cases = [
            ClientConfig { client_id: None, ..ClientConfig::viewer(ARN, "v", "ws://h") },
            ClientConfig { client_id: Some("x".into()), ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig::viewer(ARN, "AWS_reserved", "ws://h"),
            ClientConfig::viewer("arn:bad", "v", "ws://h"),
            ClientConfig::master(ARN, "http://h"),
            ClientConfig::master(ARN, "ws://h/?X-Amz-ChannelARN=x"),
            ClientConfig { region: "US".into(), ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig { connect_timeout: Duration::ZERO, ..ClientConfig::master(ARN, "ws://h") },
        ];
        for config in cases {
            assert!(matches!(config.validate(), Err(ClientError::InvalidConfig(_))), "{config:?}");
        }
    }
}
