//! Control-plane rate limits (spec §7.2, §7.3): a token bucket per operation
//! for the account, and one per operation and channel where the service has a
//! per-channel limit. An excess call gets 400 `ClientLimitExceededException`,
//! as the service's throttling does. Applied while [`super::Limits::quotas`]
//! is on (the binary's default; `--no-quotas` turns it off).

use super::faults::{Operation, TokenBucket};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Per-channel buckets kept before idle ones are pruned: the map holds at
/// most this many (plus the calls of one second) whatever the callers send.
const MAX_CHANNEL_BUCKETS: usize = 4096;
/// A per-channel bucket unused this long is full again, so it can go.
const IDLE: Duration = Duration::from_secs(1);

/// Calls per second allowed for `operation`: (per account, per channel).
pub(super) fn rates(operation: Operation) -> (u32, Option<u32>) {
    match operation {
        Operation::CreateSignalingChannel => (50, None),
        Operation::DeleteSignalingChannel => (50, Some(5)),
        Operation::DescribeSignalingChannel => (300, Some(5)),
        Operation::GetSignalingChannelEndpoint => (300, None),
        Operation::ListSignalingChannels => (50, None),
        Operation::UpdateSignalingChannel
        | Operation::TagResource
        | Operation::UntagResource
        | Operation::ListTagsForResource
        | Operation::DescribeMediaStorageConfiguration => (50, Some(5)),
        Operation::GetIceServerConfig => (100, Some(5)),
        Operation::UpdateMediaStorageConfiguration => (10, Some(5)),
        // Spec §7.4.
        Operation::JoinStorageSession | Operation::JoinStorageSessionAsViewer => (50, Some(2)),
    }
}

/// The buckets of the whole emulator (one account).
#[derive(Default)]
pub(super) struct ControlPlaneRates {
    account: HashMap<Operation, TokenBucket>,
    channel: HashMap<(Operation, String), (TokenBucket, Instant)>,
}

impl ControlPlaneRates {
    /// Takes a token for a call of `operation` on `channel` (its ARN, when the
    /// call names an existing channel); false when the call is over a limit.
    pub(super) fn admit(&mut self, operation: Operation, channel: Option<&str>, now: Instant) -> bool {
        let (per_account, per_channel) = rates(operation);
        if !self.account.entry(operation).or_insert_with(|| TokenBucket::new(per_account, now)).take(now) {
            return false;
        }
        let (Some(rate), Some(arn)) = (per_channel, channel) else {
            return true;
        };
        if self.channel.len() >= MAX_CHANNEL_BUCKETS {
            self.channel.retain(|_, (_, used)| now.saturating_duration_since(*used) < IDLE);
        }
        let (bucket, used) =
            self.channel.entry((operation, arn.to_owned())).or_insert_with(|| (TokenBucket::new(rate, now), now));
        *used = now;
        bucket.take(now)
    }

    /// Per-channel buckets held now.
    #[cfg(test)]
    fn channel_buckets(&self) -> usize {
        self.channel.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_limit_then_refill() {
        let mut rates = ControlPlaneRates::default();
        let start = Instant::now();
        for _ in 0..5 {
            assert!(rates.admit(Operation::DescribeSignalingChannel, Some("arn-a"), start));
        }
        assert!(!rates.admit(Operation::DescribeSignalingChannel, Some("arn-a"), start), "6th call in a second");
        assert!(rates.admit(Operation::DescribeSignalingChannel, Some("arn-b"), start), "another channel");
        assert!(rates.admit(Operation::DescribeSignalingChannel, Some("arn-a"), start + Duration::from_millis(250)));
    }

    #[test]
    fn per_account_limit_applies_without_a_channel() {
        let mut rates = ControlPlaneRates::default();
        let now = Instant::now();
        let admitted = (0..60).filter(|_| rates.admit(Operation::CreateSignalingChannel, None, now)).count();
        assert_eq!(admitted, 50);
    }

    #[test]
    fn per_channel_buckets_are_bounded() {
        let mut rates = ControlPlaneRates::default();
        let start = Instant::now();
        for i in 0..3 * MAX_CHANNEL_BUCKETS {
            // Spread over time so the account limit does not stop the calls.
            let now = start + Duration::from_millis(i as u64 * 20);
            rates.admit(Operation::DescribeSignalingChannel, Some(&format!("arn-{i}")), now);
            assert!(rates.channel_buckets() <= MAX_CHANNEL_BUCKETS, "{}", rates.channel_buckets());
        }
    }
}
