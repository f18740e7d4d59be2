//! Where a client connects: the URL of each attempt and the TLS settings.

use super::ClientConfig;
use super::ClientError;
use super::connect::{Phases, Socket, default_tls, open_socket, redact_query, uri_encode, with_path};
use crate::protocol::Role;
use std::sync::Arc;
use std::time::Duration;

/// The data-plane URL for `config`'s channel and role (spec §1.3).
pub(crate) fn connect_url(config: &ClientConfig) -> String {
    let mut url = format!("{}?X-Amz-ChannelARN={}", with_path(&config.endpoint), uri_encode(&config.channel_arn));
    if let (Role::Viewer, Some(id)) = (config.role, &config.client_id) {
        url.push_str("&X-Amz-ClientId=");
        url.push_str(&uri_encode(id));
    }
    url
}

/// What every connect attempt of a client opens. Cheap to clone.
#[derive(Clone)]
pub(super) struct Target {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    /// The configured endpoint, used as it is.
    pub fn direct(config: &ClientConfig) -> Result<Target, ClientError> {
        Ok(Target { inner: Arc::new(Inner { url: connect_url(config), tls: default_tls()? }) })
    }

    /// Opens one socket; returns it with its phases and the control-plane time.
    pub async fn open(&self) -> Result<(Socket, Phases, Duration), ClientError> {
        let (socket, phases) = open_socket(&self.inner.url, &self.inner.tls).await?;
        Ok((socket, phases, Duration::ZERO))
    }

    /// The endpoint for logs, without its query string.
    pub fn describe(&self) -> &str {
        redact_query(&self.inner.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_spec_templates() {
        let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo/1";
        let master = ClientConfig::master(arn, "ws://127.0.0.1:9000");
        assert_eq!(
            connect_url(&master),
            "ws://127.0.0.1:9000/?X-Amz-ChannelARN=arn%3Aaws%3Akinesisvideo%3Aus-west-2%3A123456789012%3Achannel%2Fdemo%2F1"
        );
        let viewer = ClientConfig::viewer(arn, "v.1", "wss://v-a1b2.example/path/");
        assert!(connect_url(&viewer).starts_with("wss://v-a1b2.example/path?X-Amz-ChannelARN=arn%3A"));
        assert!(connect_url(&viewer).ends_with("&X-Amz-ClientId=v.1"));
    }
}
