//! AWS credentials and where they come from: fixed keys, the environment, or an
//! application callback (the C layer implements [`CredentialsProvider`] with
//! one), or the AWS IoT credentials provider ([`super::iot`]), wrapped in
//! [`CachingCredentials`] so a provider runs only when the credentials it gave
//! last are close to expiry; [`CachingCredentials::refresh_in_background`]
//! fetches them before that moment, so that no connect waits for it.

use super::AwsError;
use super::redact::{REDACTED, Redactor};
use crate::log::{Level, log};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

const TARGET: &str = "aws";

/// An access key pair, optionally temporary (session token and expiry).
/// `Debug` shows the access key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (`AKIA…`, or `ASIA…` for temporary keys).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// Present for temporary credentials (STS); signed into every request.
    pub session_token: Option<String>,
    /// When temporary credentials stop working; `None` for long-term keys.
    pub expiry: Option<SystemTime>,
}

impl Credentials {
    /// Long-term or temporary keys without a known expiry.
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: session_token.filter(|t| !t.is_empty()).map(str::to_owned),
            expiry: None,
        }
    }

    /// The same credentials with an expiry.
    pub fn with_expiry(mut self, expiry: SystemTime) -> Credentials {
        self.expiry = Some(expiry);
        self
    }

    /// Rejects credentials that cannot sign anything.
    pub fn check(&self) -> Result<(), AwsError> {
        let bad = |what: &str| Err(AwsError::Credentials(format!("the {what} is empty")));
        if self.access_key_id.trim().is_empty() {
            return bad("access key id");
        }
        if self.secret_access_key.is_empty() {
            return bad("secret access key");
        }
        if self.access_key_id.contains(|c: char| c.is_whitespace() || c == '/' || c.is_control()) {
            return Err(AwsError::Credentials("the access key id holds a space, '/' or a control character".into()));
        }
        Ok(())
    }

    /// Whether the credentials stay valid for at least `margin` after `now`.
    pub fn fresh_at(&self, now: SystemTime, margin: Duration) -> bool {
        self.expiry.is_none_or(|expiry| now.checked_add(margin).is_some_and(|limit| limit < expiry))
    }

    /// Replaces any occurrence of the secret key or the session token in
    /// `text` (e.g. a service message echoing a canonical request), plain,
    /// URL-encoded (once or twice), JSON-escaped or base64.
    pub fn redact(&self, text: &str) -> String {
        self.redactor().scrub(text)
    }

    /// A redactor of the secret key and the session token, to extend with
    /// the secrets of one request (its signature).
    pub(crate) fn redactor(&self) -> Redactor {
        Redactor::new(
            [Some(&self.secret_access_key), self.session_token.as_ref()].into_iter().flatten().map(String::as_str),
        )
    }

    /// The form aws-sigv4 signs with.
    pub(crate) fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            self.expiry,
            "kvs-signaling",
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .field("session_token", &self.session_token.as_ref().map(|_| REDACTED))
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// A source of credentials. `fetch` may block (it may call into C or read a
/// file); the library calls it on a blocking thread, only when the cached
/// credentials are near expiry, never on the send path.
pub trait CredentialsProvider: Send + Sync {
    /// Returns the current credentials, or why there are none.
    fn fetch(&self) -> Result<Credentials, AwsError>;
}

/// The same credentials every time.
#[derive(Debug, Clone)]
pub struct StaticCredentials(Credentials);

impl StaticCredentials {
    /// Always returns `credentials`.
    pub fn new(credentials: Credentials) -> StaticCredentials {
        StaticCredentials(credentials)
    }
}

impl CredentialsProvider for StaticCredentials {
    fn fetch(&self) -> Result<Credentials, AwsError> {
        self.0.check()?;
        Ok(self.0.clone())
    }
}

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the optional
/// `AWS_SESSION_TOKEN`, read at each fetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvCredentials;

impl CredentialsProvider for EnvCredentials {
    fn fetch(&self) -> Result<Credentials, AwsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |name: &str| AwsError::Credentials(format!("the environment variable {name} is not set"));
        let access_key_id = var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret = var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        let credentials = Credentials::new(&access_key_id, &secret, var("AWS_SESSION_TOKEN").as_deref());
        credentials.check()?;
        Ok(credentials)
    }
}

/// Any closure returning credentials, e.g. a wrapper of a C callback.
impl<F> CredentialsProvider for F
where
    F: Fn() -> Result<Credentials, AwsError> + Send + Sync,
{
    fn fetch(&self) -> Result<Credentials, AwsError> {
        self()
    }
}

/// Keeps the last credentials of a provider and asks it again only when they
/// expire within `margin`, or within half their lifetime when that is
/// shorter (short-lived credentials, e.g. 15 minutes from AWS IoT), or after
/// [`CachingCredentials::invalidate`].
pub struct CachingCredentials {
    inner: Arc<dyn CredentialsProvider>,
    margin: Duration,
    cached: Mutex<Option<Cached>>,
    /// Held while the provider runs, so concurrent callers wait for one fetch.
    refreshing: Mutex<()>,
    /// Woken when credentials are stored or dropped (for the background refresh).
    changed: tokio::sync::Notify,
}

/// Credentials and when to fetch the next ones.
struct Cached {
    credentials: Credentials,
    /// `None` for credentials without expiry.
    refresh_at: Option<SystemTime>,
}

/// Retry bounds of a failed background refresh.
const REFRESH_RETRY_MIN: Duration = Duration::from_secs(1);
/// The least time between two background refreshes (250 ms): credentials
/// that expire at once (a hostile endpoint, a clock far behind) cannot make
/// the refresh loop spin; at most four fetches a second.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(250);
const REFRESH_RETRY_MAX: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CachingCredentials {
    /// Refresh this long before expiry by default.
    pub const DEFAULT_MARGIN: Duration = Duration::from_secs(5 * 60);

    /// Caches `inner` with [`CachingCredentials::DEFAULT_MARGIN`].
    pub fn new(inner: Arc<dyn CredentialsProvider>) -> CachingCredentials {
        CachingCredentials::with_margin(inner, CachingCredentials::DEFAULT_MARGIN)
    }

    /// Caches `inner`, fetching again `margin` before expiry.
    pub fn with_margin(inner: Arc<dyn CredentialsProvider>, margin: Duration) -> CachingCredentials {
        CachingCredentials {
            inner,
            margin,
            cached: Mutex::new(None),
            refreshing: Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The cached credentials if they are still fresh at `now` (before their
    /// refresh time); never blocks on the provider.
    pub fn cached(&self, now: SystemTime) -> Option<Credentials> {
        lock(&self.cached).as_ref().filter(|c| c.refresh_at.is_none_or(|at| now < at)).map(|c| c.credentials.clone())
    }

    /// When the cached credentials are due for a refresh; `None` when nothing
    /// is cached or the credentials do not expire.
    pub fn refresh_at(&self) -> Option<SystemTime> {
        lock(&self.cached).as_ref().and_then(|c| c.refresh_at)
    }

    /// Drops the cached credentials (e.g. after the service refused them), so the
    /// next call asks the provider.
    pub fn invalidate(&self) {
        *lock(&self.cached) = None;
        self.changed.notify_waiters();
    }

    /// The refresh time of credentials fetched at `now`: `margin` before they
    /// expire, or half-way through their lifetime when that comes later.
    fn refresh_time(&self, credentials: &Credentials, now: SystemTime) -> Option<SystemTime> {
        let expiry = credentials.expiry?;
        let lifetime = expiry.duration_since(now).unwrap_or_default();
        Some(expiry - self.margin.min(lifetime / 2))
    }

    /// The cached credentials, or fresh ones from the provider. Blocks while
    /// the provider runs. When the provider fails but the cached credentials
    /// have not expired yet, those are returned (with a warning).
    pub fn fetch_at(&self, now: SystemTime) -> Result<Credentials, AwsError> {
        if let Some(credentials) = self.cached(now) {
            return Ok(credentials);
        }
        let _refreshing = lock(&self.refreshing);
        // Another caller may have refreshed while this one waited.
        if let Some(credentials) = self.cached(now) {
            return Ok(credentials);
        }
        match self.inner.fetch().and_then(|c| c.check().map(|()| c)) {
            Ok(credentials) => {
                if !credentials.fresh_at(now, Duration::ZERO) {
                    return Err(AwsError::Credentials("the credentials provider returned expired credentials".into()));
                }
                if !credentials.fresh_at(now, self.margin) {
                    log!(
                        Level::Debug,
                        TARGET,
                        "short-lived credentials (within the refresh margin): refreshed half-way through their lifetime"
                    );
                }
                log!(Level::Debug, TARGET, "fetched credentials for access key {}", credentials.access_key_id);
                let refresh_at = self.refresh_time(&credentials, now);
                *lock(&self.cached) = Some(Cached { credentials: credentials.clone(), refresh_at });
                self.changed.notify_waiters();
                Ok(credentials)
            }
            Err(error) => {
                let still_valid = lock(&self.cached)
                    .as_ref()
                    .map(|c| &c.credentials)
                    .filter(|c| c.fresh_at(now, Duration::ZERO))
                    .cloned();
                match still_valid {
                    Some(credentials) => {
                        log!(
                            Level::Warn,
                            TARGET,
                            "credentials refresh failed, using the current ones until they expire: {error}"
                        );
                        Ok(credentials)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// [`CachingCredentials::fetch_at`] from async code: a cache hit returns at
    /// once; a refresh runs the provider on tokio's blocking pool.
    pub async fn get(self: &Arc<Self>) -> Result<Credentials, AwsError> {
        let now = SystemTime::now();
        if let Some(credentials) = self.cached(now) {
            return Ok(credentials);
        }
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.fetch_at(now)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(AwsError::Credentials("the credentials provider panicked".into())),
            Err(_) => Err(AwsError::Credentials("the credentials fetch was cancelled".into())),
        }
    }

    /// Keeps the cache fresh until the returned task is aborted: at each
    /// refresh time (see [`CachingCredentials`]) it fetches the next
    /// credentials on the blocking pool, so that connects and signed calls find
    /// them cached. A failed refresh is retried after 1 s, doubling up to 60 s,
    /// while the current credentials last. Idle while nothing expiring is
    /// cached. Must be called within a tokio runtime.
    pub fn refresh_in_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut retry = REFRESH_RETRY_MIN;
            let mut earliest = tokio::time::Instant::now();
            loop {
                let changed = this.changed.notified();
                let Some(due) = this.refresh_at() else {
                    changed.await;
                    continue;
                };
                let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::select! {
                    () = changed => continue,
                    () = tokio::time::sleep(wait) => {}
                }
                tokio::time::sleep_until(earliest).await;
                earliest = tokio::time::Instant::now() + MIN_REFRESH_INTERVAL;
                match this.get().await {
                    // Fresh ones, due later (or credentials that do not expire).
                    Ok(_) if this.refresh_at().is_none_or(|at| at > SystemTime::now()) => retry = REFRESH_RETRY_MIN,
                    // The provider failed; `fetch_at` logged why and kept the current ones.
                    Ok(_) => {
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(REFRESH_RETRY_MAX);
                    }
                    Err(error) => {
                        log!(
                            Level::Warn,
                            TARGET,
                            "background credentials refresh failed ({error}); retrying in {retry:?}"
                        );
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(REFRESH_RETRY_MAX);
                    }
                }
            }
        })
    }
}

impl CredentialsProvider for CachingCredentials {
    fn fetch(&self) -> Result<Credentials, AwsError> {
        self.fetch_at(SystemTime::now())
    }
}

impl fmt::Debug for CachingCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingCredentials")
            .field("margin", &self.margin)
            .field("cached", &lock(&self.cached).as_ref().map(|c| &c.credentials))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn debug_and_display_never_show_secrets() {
        let c = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", Some("SessionTokenValue"));
        let text = format!("{c:?}");
        assert!(text.contains("AKIDEXAMPLE"), "{text}");
        assert!(!text.contains("wJalr") && !text.contains("SessionTokenValue"), "{text}");
        assert_eq!(
            c.redact("token SessionTokenValue and wJalrXUtnFEMI/K7MDENG"),
            "token ** redacted ** and ** redacted **"
        );
        let cache = CachingCredentials::new(Arc::new(StaticCredentials::new(c.clone())));
        cache.fetch().unwrap();
        let text = format!("{cache:?}");
        assert!(!text.contains("wJalr") && !text.contains("SessionTokenValue"), "{text}");
        assert_eq!(Credentials::new("a", "b", Some("")).session_token, None);
    }

    #[test]
    fn checks() {
        assert!(matches!(Credentials::new("", "s", None).check(), Err(AwsError::Credentials(_))));
        assert!(matches!(Credentials::new("a", "", None).check(), Err(AwsError::Credentials(_))));
        assert!(matches!(Credentials::new("a b", "s", None).check(), Err(AwsError::Credentials(_))));
        assert!(Credentials::new("AKID", "s", None).check().is_ok());
    }

    struct Counting {
        calls: AtomicUsize,
        lifetime: Duration,
        fail_after: usize,
    }

    impl CredentialsProvider for Counting {
        fn fetch(&self) -> Result<Credentials, AwsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n >= self.fail_after {
                return Err(AwsError::Credentials("callback failed".into()));
            }
            Ok(Credentials::new(&format!("AKID{n}"), "secret", Some("token"))
                .with_expiry(SystemTime::now() + self.lifetime))
        }
    }

    #[test]
    fn caching_refreshes_only_near_expiry() {
        let provider =
            Arc::new(Counting { calls: AtomicUsize::new(0), lifetime: Duration::from_secs(3600), fail_after: 99 });
        let cache = CachingCredentials::new(provider.clone());
        let now = SystemTime::now();
        assert_eq!(cache.fetch_at(now).unwrap().access_key_id, "AKID0");
        assert_eq!(cache.fetch_at(now).unwrap().access_key_id, "AKID0");
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
        // 56 minutes later the hour-long credentials are within the 5-minute margin.
        let later = now + Duration::from_secs(56 * 60);
        assert!(cache.cached(later).is_none());
        assert_eq!(cache.fetch_at(later).unwrap().access_key_id, "AKID1");
        cache.invalidate();
        assert_eq!(cache.fetch_at(now).unwrap().access_key_id, "AKID2");
        assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn short_lived_credentials_are_refreshed_half_way() {
        let provider =
            Arc::new(Counting { calls: AtomicUsize::new(0), lifetime: Duration::from_secs(10), fail_after: 99 });
        // A 5-minute margin would leave ten-second credentials never fresh.
        let cache = CachingCredentials::new(provider.clone());
        let now = SystemTime::now();
        cache.fetch_at(now).unwrap();
        let due = cache.refresh_at().unwrap().duration_since(now).unwrap();
        assert!((Duration::from_secs(4)..=Duration::from_secs(6)).contains(&due), "{due:?}");
        assert!(cache.cached(now + Duration::from_secs(4)).is_some());
        assert!(cache.cached(now + Duration::from_secs(6)).is_none());
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
        let long = CachingCredentials::new(Arc::new(StaticCredentials::new(Credentials::new("AKID", "s", None))));
        long.fetch_at(now).unwrap();
        assert_eq!(long.refresh_at(), None, "credentials without expiry are never due");
    }

    #[tokio::test]
    async fn the_background_refresh_fetches_before_expiry() {
        let provider =
            Arc::new(Counting { calls: AtomicUsize::new(0), lifetime: Duration::from_secs(1), fail_after: 99 });
        let cache = Arc::new(CachingCredentials::new(provider.clone()));
        let task = cache.refresh_in_background();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(provider.calls.load(Ordering::SeqCst), 0, "idle while nothing is cached");
        cache.get().await.unwrap();
        // Refreshed every half second (half the lifetime) with nobody asking.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let calls = provider.calls.load(Ordering::SeqCst);
        assert!(calls >= 3, "{calls} fetches in 1.8 s of one-second credentials");
        assert!(cache.cached(SystemTime::now()).is_some(), "fresh credentials are cached");
        task.abort();
    }

    #[tokio::test]
    async fn credentials_that_expire_at_once_do_not_make_the_refresh_spin() {
        let provider =
            Arc::new(Counting { calls: AtomicUsize::new(0), lifetime: Duration::from_millis(20), fail_after: 999 });
        let cache = Arc::new(CachingCredentials::new(provider.clone()));
        let task = cache.refresh_in_background();
        cache.get().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        task.abort();
        // Due every 10 ms; one fetch per MIN_REFRESH_INTERVAL at most.
        let calls = provider.calls.load(Ordering::SeqCst);
        assert!((2..=6).contains(&calls), "{calls} fetches in 1 s of 20 ms credentials");
    }

    #[test]
    fn failing_refresh_keeps_unexpired_credentials() {
        let provider =
            Arc::new(Counting { calls: AtomicUsize::new(0), lifetime: Duration::from_secs(600), fail_after: 1 });
        let cache = CachingCredentials::new(provider.clone());
        let now = SystemTime::now();
        assert_eq!(cache.fetch_at(now).unwrap().access_key_id, "AKID0");
        // Inside the margin: the refresh fails, the old ones still work for a while.
        let soon = now + Duration::from_secs(400);
        assert_eq!(cache.fetch_at(soon).unwrap().access_key_id, "AKID0");
        // After expiry the failure surfaces.
        let expired = now + Duration::from_secs(700);
        assert!(matches!(cache.fetch_at(expired), Err(AwsError::Credentials(m)) if m == "callback failed"));
    }

    #[test]
    fn expired_credentials_from_a_provider_are_refused() {
        let stale = Credentials::new("AKID", "s", None).with_expiry(SystemTime::now() - Duration::from_secs(1));
        let cache = CachingCredentials::new(Arc::new(StaticCredentials::new(stale)));
        assert!(matches!(cache.fetch(), Err(AwsError::Credentials(_))));
        let closure = || Ok(Credentials::new("AKIDCLOSURE", "s", None));
        let cache = CachingCredentials::new(Arc::new(closure));
        assert_eq!(cache.fetch().unwrap().access_key_id, "AKIDCLOSURE");
    }

    #[tokio::test]
    async fn async_get_uses_the_blocking_pool() {
        let cache = Arc::new(CachingCredentials::new(Arc::new(|| Ok(Credentials::new("AKIDASYNC", "s", None)))));
        assert_eq!(cache.get().await.unwrap().access_key_id, "AKIDASYNC");
        let panicking =
            Arc::new(CachingCredentials::new(Arc::new(|| -> Result<Credentials, AwsError> { panic!("boom") })));
        assert!(matches!(panicking.get().await, Err(AwsError::Credentials(m)) if m.contains("panicked")));
    }
}
