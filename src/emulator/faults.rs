//! Limits, quotas and injected faults: the public knobs ([`Limits`], [`Target`],
//! [`ConnectRefusal`], [`ControlPlaneFault`], [`Operation`]) and the private
//! state the request paths consult. Plain data behind the emulator's fault
//! mutex; no I/O.

use crate::protocol::Role;
use std::time::{Duration, Instant};

/// A control-plane (or HTTPS channel endpoint) operation the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `POST /createSignalingChannel`.
    CreateSignalingChannel,
    /// `POST /describeSignalingChannel`.
    DescribeSignalingChannel,
    /// `POST /getSignalingChannelEndpoint`.
    GetSignalingChannelEndpoint,
    /// `POST /deleteSignalingChannel`.
    DeleteSignalingChannel,
    /// `POST /listSignalingChannels`.
    ListSignalingChannels,
    /// `POST /describeMediaStorageConfiguration`.
    DescribeMediaStorageConfiguration,
    /// `POST {HTTPS endpoint}/v1/get-ice-server-config`.
    GetIceServerConfig,
    /// `POST /updateSignalingChannel`.
    UpdateSignalingChannel,
    /// `POST /TagResource`.
    TagResource,
    /// `POST /UntagResource`.
    UntagResource,
    /// `POST /ListTagsForResource`.
    ListTagsForResource,
    /// `POST /updateMediaStorageConfiguration`.
    UpdateMediaStorageConfiguration,
    /// `POST {WEBRTC endpoint}/joinStorageSession`.
    JoinStorageSession,
    /// `POST {WEBRTC endpoint}/joinStorageSessionAsViewer`.
    JoinStorageSessionAsViewer,
}

/// Every operation, in a fixed order. (A free constant rather than an
/// associated one: cbindgen would put an associated constant, and with it an
/// opaque `Operation`, into the C header.)
pub(super) const OPERATIONS: [Operation; 14] = [
    Operation::CreateSignalingChannel,
    Operation::DescribeSignalingChannel,
    Operation::GetSignalingChannelEndpoint,
    Operation::DeleteSignalingChannel,
    Operation::ListSignalingChannels,
    Operation::DescribeMediaStorageConfiguration,
    Operation::GetIceServerConfig,
    Operation::UpdateSignalingChannel,
    Operation::TagResource,
    Operation::UntagResource,
    Operation::ListTagsForResource,
    Operation::UpdateMediaStorageConfiguration,
    Operation::JoinStorageSession,
    Operation::JoinStorageSessionAsViewer,
];

impl Operation {
    /// Every operation, in a fixed order.
    pub fn all() -> [Operation; 14] {
        OPERATIONS
    }

    /// The API name, e.g. `DescribeSignalingChannel`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateSignalingChannel => "CreateSignalingChannel",
            Operation::DescribeSignalingChannel => "DescribeSignalingChannel",
            Operation::GetSignalingChannelEndpoint => "GetSignalingChannelEndpoint",
            Operation::DeleteSignalingChannel => "DeleteSignalingChannel",
            Operation::ListSignalingChannels => "ListSignalingChannels",
            Operation::DescribeMediaStorageConfiguration => "DescribeMediaStorageConfiguration",
            Operation::GetIceServerConfig => "GetIceServerConfig",
            Operation::UpdateSignalingChannel => "UpdateSignalingChannel",
            Operation::TagResource => "TagResource",
            Operation::UntagResource => "UntagResource",
            Operation::ListTagsForResource => "ListTagsForResource",
            Operation::UpdateMediaStorageConfiguration => "UpdateMediaStorageConfiguration",
            Operation::JoinStorageSession => "JoinStorageSession",
            Operation::JoinStorageSessionAsViewer => "JoinStorageSessionAsViewer",
        }
    }

    /// Parses an API name as [`Operation::name`] spells it.
    pub fn parse(name: &str) -> Option<Operation> {
        OPERATIONS.into_iter().find(|operation| operation.name() == name)
    }

    /// The request path of a regional control-plane operation (spec §1.1);
    /// `None` for GetIceServerConfig, which lives under an HTTPS channel
    /// endpoint, and the joins, under the WEBRTC endpoint.
    pub(super) fn control_plane_path(self) -> Option<&'static str> {
        match self {
            Operation::CreateSignalingChannel => Some("/createSignalingChannel"),
            Operation::DescribeSignalingChannel => Some("/describeSignalingChannel"),
            Operation::GetSignalingChannelEndpoint => Some("/getSignalingChannelEndpoint"),
            Operation::DeleteSignalingChannel => Some("/deleteSignalingChannel"),
            Operation::ListSignalingChannels => Some("/listSignalingChannels"),
            Operation::DescribeMediaStorageConfiguration => Some("/describeMediaStorageConfiguration"),
            Operation::GetIceServerConfig => None,
            Operation::UpdateSignalingChannel => Some("/updateSignalingChannel"),
            Operation::TagResource => Some("/TagResource"),
            Operation::UntagResource => Some("/UntagResource"),
            Operation::ListTagsForResource => Some("/ListTagsForResource"),
            Operation::UpdateMediaStorageConfiguration => Some("/updateMediaStorageConfiguration"),
            Operation::JoinStorageSession | Operation::JoinStorageSessionAsViewer => None,
        }
    }

    pub(super) fn index(self) -> usize {
        OPERATIONS.iter().position(|operation| *operation == self).unwrap_or(0)
    }
}

/// Connection limits, changeable while running with [`super::Emulator::set_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection that sends nothing (no data frame, ping or pong) for this
    /// long is closed with 1001 (spec §9.2; the service's is 10 minutes).
    pub idle_timeout: Duration,
    /// A connection this old is closed with 1001 (spec §9.3).
    pub max_connection_age: Duration,
    /// Default time between a GO_AWAY and the 1001 close that follows it.
    pub go_away_grace: Duration,
    /// Enforce the message and connect rate quotas (spec §7.1).
    pub quotas: bool,
}

/// Which connections a fault applies to: every current (not replaced)
/// connection matching all the fields that are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// A channel name or ARN.
    pub channel: Option<String>,
    /// The master, or the viewers.
    pub role: Option<Role>,
    /// A viewer's client id.
    pub client_id: Option<String>,
}

impl Target {
    /// Every connection.
    pub fn all() -> Target {
        Target::default()
    }

    /// Every connection of one channel (name or ARN).
    pub fn channel(channel: &str) -> Target {
        Target { channel: Some(channel.to_owned()), ..Target::default() }
    }

    /// The master of a channel (name or ARN).
    pub fn master(channel: &str) -> Target {
        Target { channel: Some(channel.to_owned()), role: Some(Role::Master), client_id: None }
    }

    /// One viewer of a channel (name or ARN).
    pub fn viewer(channel: &str, client_id: &str) -> Target {
        Target { channel: Some(channel.to_owned()), role: Some(Role::Viewer), client_id: Some(client_id.to_owned()) }
    }
}

/// How [`super::Emulator::refuse_connections`] refuses WebSocket upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// Answer with this HTTP status (400–599) and an AWS error body.
    Status(u16),
    /// Close the TCP connection without any HTTP response.
    Reset,
}

/// Answers control-plane calls with an HTTP error instead of serving them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneFault {
    /// HTTP status, 400–599.
    pub status: u16,
    /// `x-amzn-ErrorType`; by default derived from the status
    /// (500 `InternalFailure`, 503 `ServiceUnavailable`, ...).
    pub error_type: Option<String>,
    /// Fail only this many calls (then the fault ends).
    pub count: Option<u64>,
    /// Fail calls only for this long.
    pub duration: Option<Duration>,
    /// The operations affected; empty means all of them.
    pub operations: Vec<Operation>,
}

impl Default for ControlPlaneFault {
    fn default() -> ControlPlaneFault {
        ControlPlaneFault { status: 500, error_type: None, count: None, duration: None, operations: Vec::new() }
    }
}

/// The AWS error code used for an injected status without an explicit one.
pub(super) fn default_error_type(status: u16) -> &'static str {
    match status {
        400 => "ClientLimitExceededException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailable",
        _ => "InternalFailure",
    }
}

/// A token bucket: `rate` tokens a second, holding at most `rate`, so a full
/// second's quota may arrive in one burst (spec §7.1 "N TPS").
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket { tokens: f64::from(rate), rate: f64::from(rate), last: now }
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-connection message quotas (spec §7.1): SDP_OFFER and SDP_ANSWER 5/s
/// each, ICE_CANDIDATE 20/s.
pub(super) const SDP_PER_SECOND: u32 = 5;
pub(super) const ICE_PER_SECOND: u32 = 20;
/// Connect requests per channel and role (spec §7.1).
pub(super) const CONNECTS_PER_SECOND: u32 = 3;

struct ActiveControlPlaneFault {
    fault: ControlPlaneFault,
    until: Option<Instant>,
    remaining: Option<u64>,
}

/// Faults in force; consulted on each upgrade and control-plane call.
#[derive(Default)]
pub(super) struct FaultState {
    refusal: Option<(ConnectRefusal, Instant)>,
    control_plane: Option<ActiveControlPlaneFault>,
    frame_delay: Option<(Duration, Option<Instant>)>,
}

impl FaultState {
    pub(super) fn refuse_connections(&mut self, refusal: ConnectRefusal, until: Instant) {
        self.refusal = Some((refusal, until));
    }

    /// The refusal in force for an upgrade arriving `now`.
    pub(super) fn connect_refusal(&mut self, now: Instant) -> Option<ConnectRefusal> {
        match self.refusal {
            Some((refusal, until)) if now < until => Some(refusal),
            Some(_) => {
                self.refusal = None;
                None
            }
            None => None,
        }
    }

    pub(super) fn fail_control_plane(&mut self, fault: ControlPlaneFault, now: Instant) {
        let until = fault.duration.map(|duration| now + duration);
        let remaining = fault.count;
        self.control_plane = Some(ActiveControlPlaneFault { fault, until, remaining });
    }

    /// The (status, error type) to answer `operation` with, consuming one of a
    /// counted fault's failures.
    pub(super) fn control_plane_error(&mut self, operation: Operation, now: Instant) -> Option<(u16, String)> {
        let active = self.control_plane.as_mut()?;
        if active.until.is_some_and(|until| now >= until) || active.remaining == Some(0) {
            self.control_plane = None;
            return None;
        }
        let fault = &active.fault;
        if !fault.operations.is_empty() && !fault.operations.contains(&operation) {
            return None;
        }
        if let Some(remaining) = active.remaining.as_mut() {
            *remaining -= 1;
        }
        let error_type = fault.error_type.clone().unwrap_or_else(|| default_error_type(fault.status).to_owned());
        Some((fault.status, error_type))
    }

    pub(super) fn delay_frames(&mut self, delay: Duration, until: Option<Instant>) {
        self.frame_delay = (!delay.is_zero()).then_some((delay, until));
    }

    /// The delay in force for frames queued at `now`.
    pub(super) fn frame_delay(&mut self, now: Instant) -> Duration {
        match self.frame_delay {
            Some((delay, until)) if until.is_none_or(|until| now < until) => delay,
            Some(_) => {
                self.frame_delay = None;
                Duration::ZERO
            }
            None => Duration::ZERO,
        }
    }

    pub(super) fn has_frame_delay(&self) -> bool {
        self.frame_delay.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5, start);
        assert_eq!((0..7).filter(|_| bucket.take(start)).count(), 5);
        assert!(!bucket.take(start + Duration::from_millis(100)));
        assert!(bucket.take(start + Duration::from_millis(200)));
        assert!(!bucket.take(start + Duration::from_millis(210)));
        // Never more than a second's worth stored.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.take(later)).count(), 5);
    }

    #[test]
    fn counted_control_plane_fault_ends_and_respects_operations() {
        let now = Instant::now();
        let mut state = FaultState::default();
        state.fail_control_plane(
            ControlPlaneFault {
                status: 503,
                count: Some(2),
                operations: vec![Operation::DescribeSignalingChannel],
                ..ControlPlaneFault::default()
            },
            now,
        );
        assert_eq!(state.control_plane_error(Operation::GetIceServerConfig, now), None);
        let expected = Some((503, "ServiceUnavailable".to_owned()));
        assert_eq!(state.control_plane_error(Operation::DescribeSignalingChannel, now), expected);
        assert_eq!(state.control_plane_error(Operation::DescribeSignalingChannel, now), expected);
        assert_eq!(state.control_plane_error(Operation::DescribeSignalingChannel, now), None);
    }

    #[test]
    fn timed_faults_end() {
        let now = Instant::now();
        let mut state = FaultState::default();
        state.fail_control_plane(
            ControlPlaneFault { duration: Some(Duration::from_secs(1)), ..ControlPlaneFault::default() },
            now,
        );
        assert_eq!(
            state.control_plane_error(Operation::ListSignalingChannels, now),
            Some((500, "InternalFailure".into()))
        );
        assert_eq!(state.control_plane_error(Operation::ListSignalingChannels, now + Duration::from_secs(1)), None);
        state.refuse_connections(ConnectRefusal::Reset, now + Duration::from_secs(1));
        assert_eq!(state.connect_refusal(now), Some(ConnectRefusal::Reset));
        assert_eq!(state.connect_refusal(now + Duration::from_secs(2)), None);
        state.delay_frames(Duration::from_millis(5), Some(now + Duration::from_secs(1)));
        assert_eq!(state.frame_delay(now), Duration::from_millis(5));
        assert_eq!(state.frame_delay(now + Duration::from_secs(1)), Duration::ZERO);
        assert!(!state.has_frame_delay());
        assert_eq!(Operation::parse("GetIceServerConfig"), Some(Operation::GetIceServerConfig));
        assert_eq!(Operation::parse("nope"), None);
    }
}
