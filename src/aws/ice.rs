//! ICE servers: the TURN servers GetIceServerConfig returns (spec §8.5) and the
//! region's STUN server (spec §1.5).

use super::AwsError;
use crate::log::{Level, log};
use crate::protocol::get_ci;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

pub use super::endpoints::stun_url;

/// TURN credentials are refreshed this long before their `Ttl` runs out (spec §9.6).
pub const ICE_REFRESH_GRACE: Duration = Duration::from_secs(30);

/// `Ttl` assumed when a server entry has none (the service's usual 300 s).
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// One ICE server entry: `{urls, username, credential}` in WebRTC terms.
/// `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `turn:` / `turns:` URIs (or `stun:` for the region's STUN server).
    pub uris: Vec<String>,
    /// The TURN username (empty for STUN).
    pub username: String,
    /// The TURN password (empty for STUN).
    pub password: String,
    /// How long the username and password stay valid from the time they were fetched.
    pub ttl: Duration,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("uris", &self.uris)
            .field("username", &self.username)
            .field("password", &"** redacted **")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl IceServer {
    /// The region's STUN server as an entry without credentials.
    pub fn stun(region: &str, variant: super::EndpointVariant) -> Result<IceServer, AwsError> {
        Ok(IceServer {
            uris: vec![stun_url(region, variant)?],
            username: String::new(),
            password: String::new(),
            ttl: Duration::MAX,
        })
    }
}

/// When to fetch the TURN servers again: the shortest `Ttl` minus the grace,
/// at least one second. `None` for an empty list.
pub fn refresh_after(servers: &[IceServer]) -> Option<Duration> {
    let shortest = servers.iter().map(|s| s.ttl).min()?;
    Some(shortest.saturating_sub(ICE_REFRESH_GRACE).max(Duration::from_secs(1)))
}

/// Reads a GetIceServerConfig reply body `{"IceServerList": [{Uris, Username,
/// Password, Ttl}]}`. Keys match in either casing; an entry without URIs is
/// skipped with a log line; a missing `Ttl` counts as 300 s.
pub(crate) fn parse_ice_server_list(body: &Value) -> Result<Vec<IceServer>, AwsError> {
    let bad = |what: &str| AwsError::BadResponse(format!("GetIceServerConfig: {what}"));
    let object = body.as_object().ok_or_else(|| bad("the reply is not a JSON object"))?;
    let list = match get_ci(object, "IceServerList") {
        Some(Value::Array(list)) => list,
        Some(Value::Null) | None => return Ok(Vec::new()),
        Some(_) => return Err(bad("IceServerList is not an array")),
    };
    let mut servers = Vec::with_capacity(list.len());
    for entry in list {
        let Some(entry) = entry.as_object() else {
            return Err(bad("an IceServerList entry is not an object"));
        };
        let text = |key: &str| get_ci(entry, key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let uris: Vec<String> = match get_ci(entry, "Uris") {
            Some(Value::Array(uris)) => uris.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        if uris.is_empty() {
            log!(Level::Warn, "aws", "skipped an ICE server entry without URIs");
            continue;
        }
        let ttl = match get_ci(entry, "Ttl") {
            Some(ttl) => ttl
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .and_then(|t| Duration::try_from_secs_f64(t).ok())
                .ok_or_else(|| bad("Ttl is not a number of seconds"))?,
            None => DEFAULT_TTL,
        };
        servers.push(IceServer { uris, username: text("Username"), password: text("Password"), ttl });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_service_reply() {
        let body = json!({"IceServerList": [
            {"Uris": ["turn:18-236-204-50.t-13dca313.kinesisvideo.us-west-2.amazonaws.com:443?transport=udp",
                      "turns:18-236-204-50.t-13dca313.kinesisvideo.us-west-2.amazonaws.com:443?transport=tcp"],
             "Username": "1641542855:djE6YXJu", "Password": "Xg+ghq/secret=", "Ttl": 300},
            {"uris": ["turns:h:443?transport=udp"], "username": "u", "password": "p", "ttl": 120},
            {"Uris": [], "Username": "skipped"}
        ]});
        let servers = parse_ice_server_list(&body).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].uris.len(), 2);
        assert_eq!(servers[0].password, "Xg+ghq/secret=");
        assert_eq!(servers[1].ttl, Duration::from_secs(120));
        assert!(!format!("{servers:?}").contains("Xg+ghq"));
        assert_eq!(refresh_after(&servers), Some(Duration::from_secs(90)));
        assert_eq!(refresh_after(&[]), None);
        assert_eq!(parse_ice_server_list(&json!({})).unwrap(), vec![]);
        assert!(matches!(parse_ice_server_list(&json!({"IceServerList": 3})), Err(AwsError::BadResponse(_))));
        assert!(matches!(
            parse_ice_server_list(&json!({"IceServerList": [{"Uris": ["turn:x"], "Ttl": "soon"}]})),
            Err(AwsError::BadResponse(_))
        ));
        // Found by fuzzing: a Ttl beyond a Duration's range panicked.
        assert!(matches!(
            parse_ice_server_list(&json!({"IceServerList": [{"Uris": ["turn:x"], "Ttl": 1e300}]})),
            Err(AwsError::BadResponse(_))
        ));
        let defaulted = parse_ice_server_list(&json!({"IceServerList": [{"Uris": ["turn:x"]}]})).unwrap();
        assert_eq!(defaulted[0].ttl, Duration::from_secs(300));
    }

    #[test]
    fn stun_entry() {
        let stun = IceServer::stun("eu-west-1", Default::default()).unwrap();
        assert_eq!(stun.uris, ["stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443"]);
        assert!(stun.username.is_empty());
    }
}
