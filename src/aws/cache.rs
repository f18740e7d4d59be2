//! Cache of channel ARNs and endpoints, so a warm start goes straight to the
//! socket: in memory, optionally mirrored to a JSON file (written atomically:
//! a temporary file in the same directory, then a rename). A corrupt or
//! unreadable file is ignored with a log line. Entries expire after a TTL and
//! are dropped on 404 / GO_AWAY through [`EndpointCache::invalidate`].
//!
//! File writes are synchronous and small (a few hundred bytes per entry).

use super::ChannelEndpoints;
use crate::log::{Level, log};
use crate::protocol::Role;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TARGET: &str = "aws";
const FILE_VERSION: u32 = 1;

/// What is cached for one channel (name or ARN, as the application named it) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedEndpoints {
    /// The channel's ARN.
    pub arn: String,
    /// The channel's WSS and HTTPS endpoints for the role.
    pub endpoints: ChannelEndpoints,
    /// When the service returned them.
    pub fetched_at: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    channel: String,
    role: String,
    arn: String,
    wss: String,
    https: String,
    /// The WEBRTC endpoint, when it was asked for (media storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webrtc: Option<String>,
    /// Milliseconds since the Unix epoch.
    fetched_at: u64,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: Vec<FileEntry>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Master => "MASTER",
        Role::Viewer => "VIEWER",
    }
}

fn role_from_name(name: &str) -> Option<Role> {
    match name {
        "MASTER" => Some(Role::Master),
        "VIEWER" => Some(Role::Viewer),
        _ => None,
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The endpoint and ARN cache of a client (or of several: it is `Sync`).
#[derive(Debug)]
pub struct EndpointCache {
    ttl: Duration,
    path: Option<PathBuf>,
    entries: Mutex<HashMap<(String, Role), CachedEndpoints>>,
}

impl EndpointCache {
    /// A cache whose entries live `ttl`; with `path`, entries are loaded from
    /// that file now and written back on every change.
    pub fn new(ttl: Duration, path: Option<PathBuf>) -> EndpointCache {
        let entries = path.as_deref().map(load).unwrap_or_default();
        EndpointCache { ttl, path, entries: Mutex::new(entries) }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<(String, Role), CachedEndpoints>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_fresh(&self, entry: &CachedEndpoints, now: SystemTime) -> bool {
        match now.duration_since(entry.fetched_at) {
            Ok(age) => age < self.ttl,
            // Fetched "in the future": the clock went back; trust it only within the TTL.
            Err(e) => e.duration() < self.ttl,
        }
    }

    /// The entry for `channel` and `role` if it is younger than the TTL.
    pub fn get(&self, channel: &str, role: Role) -> Option<CachedEndpoints> {
        self.get_at(channel, role, SystemTime::now())
    }

    /// [`EndpointCache::get`] at a given time.
    pub fn get_at(&self, channel: &str, role: Role, now: SystemTime) -> Option<CachedEndpoints> {
        let entries = self.entries();
        entries.get(&(channel.to_owned(), role)).filter(|e| self.is_fresh(e, now)).cloned()
    }

    /// Stores what the service just returned.
    pub fn put(&self, channel: &str, role: Role, arn: &str, endpoints: &ChannelEndpoints) {
        self.put_at(channel, role, arn, endpoints, SystemTime::now());
    }

    /// [`EndpointCache::put`] with a given fetch time.
    pub fn put_at(&self, channel: &str, role: Role, arn: &str, endpoints: &ChannelEndpoints, fetched_at: SystemTime) {
        let entry = CachedEndpoints { arn: arn.to_owned(), endpoints: endpoints.clone(), fetched_at };
        let mut entries = self.entries();
        entries.insert((channel.to_owned(), role), entry);
        self.save(&entries);
    }

    /// Drops the entry for `channel` and `role` (after a 404 or GO_AWAY).
    pub fn invalidate(&self, channel: &str, role: Role) {
        let mut entries = self.entries();
        if entries.remove(&(channel.to_owned(), role)).is_some() {
            self.save(&entries);
        }
    }

    /// Drops every entry of `channel`, and every entry whose ARN is `channel`.
    pub fn invalidate_channel(&self, channel: &str) {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|(name, _), entry| name != channel && entry.arn != channel);
        if entries.len() != before {
            self.save(&entries);
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut entries = self.entries();
        entries.clear();
        self.save(&entries);
    }

    /// Writes the file (if any) under the entries lock, so writers do not interleave.
    fn save(&self, entries: &HashMap<(String, Role), CachedEndpoints>) {
        let Some(path) = &self.path else { return };
        let now = SystemTime::now();
        let mut file_entries: Vec<FileEntry> = entries
            .iter()
            .filter(|(_, e)| self.is_fresh(e, now))
            .map(|((channel, role), e)| FileEntry {
                channel: channel.clone(),
                role: role_name(*role).to_owned(),
                arn: e.arn.clone(),
                wss: e.endpoints.wss.clone(),
                https: e.endpoints.https.clone(),
                webrtc: e.endpoints.webrtc.clone(),
                fetched_at: millis(e.fetched_at),
            })
            .collect();
        file_entries.sort_by(|a, b| (&a.channel, &a.role).cmp(&(&b.channel, &b.role)));
        let file = CacheFile { version: FILE_VERSION, entries: file_entries };
        let text = match serde_json::to_vec_pretty(&file) {
            Ok(text) => text,
            Err(e) => return log!(Level::Warn, TARGET, "endpoint cache: cannot serialise: {e}"),
        };
        if let Err(e) = write_atomically(path, &text) {
            log!(Level::Warn, TARGET, "endpoint cache: cannot write {}: {e}", path.display());
        }
    }
}

/// Writes `path` by writing a sibling temporary file and renaming it over
/// `path`, so a reader sees the old or the new content, never a torn one.
fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "cache".into());
    let unique = format!(".{name}.tmp.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let tmp = path.with_file_name(unique);
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads the cache file; anything wrong with it means an empty cache.
fn load(path: &Path) -> HashMap<(String, Role), CachedEndpoints> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            log!(Level::Warn, TARGET, "endpoint cache: cannot read {}, starting empty: {e}", path.display());
            return HashMap::new();
        }
    };
    parse_file(&bytes, path)
}

/// Reads the content of the cache file at `path` (named in log lines);
/// anything wrong with it means an empty cache, an implausible entry is skipped.
pub(super) fn parse_file(bytes: &[u8], path: &Path) -> HashMap<(String, Role), CachedEndpoints> {
    let file: CacheFile = match serde_json::from_slice(bytes) {
        Ok(file) => file,
        Err(e) => {
            log!(Level::Warn, TARGET, "endpoint cache: {} is not a valid cache file, ignored: {e}", path.display());
            return HashMap::new();
        }
    };
    if file.version != FILE_VERSION {
        log!(Level::Info, TARGET, "endpoint cache: {} has version {}, ignored", path.display(), file.version);
        return HashMap::new();
    }
    let mut entries = HashMap::new();
    for entry in file.entries {
        let Some(role) = role_from_name(&entry.role) else { continue };
        let plausible = !entry.channel.is_empty()
            && crate::protocol::validate_channel_arn(&entry.arn).is_ok()
            && (entry.wss.starts_with("wss://") || entry.wss.starts_with("ws://"))
            && (entry.https.starts_with("https://") || entry.https.starts_with("http://"))
            && entry.webrtc.as_ref().is_none_or(|w| w.starts_with("https://") || w.starts_with("http://"));
        if !plausible {
            log!(Level::Info, TARGET, "endpoint cache: skipped an implausible entry in {}", path.display());
            continue;
        }
        let fetched_at = UNIX_EPOCH + Duration::from_millis(entry.fetched_at);
        let endpoints = ChannelEndpoints { wss: entry.wss, https: entry.https, webrtc: entry.webrtc };
        entries.insert((entry.channel, role), CachedEndpoints { arn: entry.arn, endpoints, fetched_at });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo/1234567890123";

    fn endpoints(n: u32) -> ChannelEndpoints {
        ChannelEndpoints {
            wss: format!("wss://m-{n}.kinesisvideo.us-west-2.amazonaws.com"),
            https: format!("https://r-{n}.kinesisvideo.us-west-2.amazonaws.com"),
            webrtc: None,
        }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "kvs-cache-test-{tag}-{}-{nanos}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn memory_ttl_and_invalidation() {
        let cache = EndpointCache::new(Duration::from_secs(60), None);
        let now = SystemTime::now();
        cache.put_at("demo", Role::Master, ARN, &endpoints(1), now);
        cache.put_at("demo", Role::Viewer, ARN, &endpoints(2), now);
        assert_eq!(cache.get_at("demo", Role::Master, now).unwrap().endpoints, endpoints(1));
        assert_eq!(cache.get_at("demo", Role::Viewer, now + Duration::from_secs(59)).unwrap().arn, ARN);
        assert!(cache.get_at("demo", Role::Viewer, now + Duration::from_secs(60)).is_none());
        assert!(cache.get_at("other", Role::Master, now).is_none());
        cache.invalidate("demo", Role::Master);
        assert!(cache.get_at("demo", Role::Master, now).is_none());
        assert!(cache.get_at("demo", Role::Viewer, now).is_some());
        cache.put_at(ARN, Role::Master, ARN, &endpoints(3), now);
        cache.invalidate_channel(ARN);
        assert!(cache.get_at("demo", Role::Viewer, now).is_none());
        assert!(cache.get_at(ARN, Role::Master, now).is_none());
    }

    #[test]
    fn file_round_trip() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("endpoints.json");
        let cache = EndpointCache::new(Duration::from_secs(3600), Some(path.clone()));
        assert!(cache.get("demo", Role::Master).is_none());
        cache.put("demo", Role::Master, ARN, &endpoints(1));
        cache.put(ARN, Role::Viewer, ARN, &endpoints(2));
        let reloaded = EndpointCache::new(Duration::from_secs(3600), Some(path.clone()));
        let entry = reloaded.get("demo", Role::Master).unwrap();
        assert_eq!((entry.arn.as_str(), &entry.endpoints), (ARN, &endpoints(1)));
        assert_eq!(reloaded.get(ARN, Role::Viewer).unwrap().endpoints, endpoints(2));
        // Millisecond precision survives the file.
        let original = cache.get("demo", Role::Master).unwrap().fetched_at;
        assert!(original.duration_since(entry.fetched_at).unwrap() < Duration::from_millis(1));
        // Invalidation reaches the file; no temporary files are left behind.
        reloaded.invalidate("demo", Role::Master);
        let again = EndpointCache::new(Duration::from_secs(3600), Some(path.clone()));
        assert!(again.get("demo", Role::Master).is_none());
        assert!(again.get(ARN, Role::Viewer).is_some());
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("endpoints.json")]);
        // A short TTL on reload hides old entries.
        let short = EndpointCache::new(Duration::ZERO, Some(path));
        assert!(short.get(ARN, Role::Viewer).is_none());
    }

    #[test]
    fn corrupt_or_unreadable_files_are_ignored() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("endpoints.json");
        for content in ["{not json", "", "{\"version\":99,\"entries\":[]}", "[1,2,3]"] {
            std::fs::write(&path, content).unwrap();
            let cache = EndpointCache::new(Duration::from_secs(60), Some(path.clone()));
            assert!(cache.get("demo", Role::Master).is_none());
            // The next write replaces the bad file with a good one.
            cache.put("demo", Role::Master, ARN, &endpoints(1));
            let reloaded = EndpointCache::new(Duration::from_secs(60), Some(path.clone()));
            assert!(reloaded.get("demo", Role::Master).is_some(), "{content:?}");
        }
        // Implausible entries are skipped, good ones kept.
        let now = millis(SystemTime::now());
        let text = format!(
            r#"{{"version":1,"entries":[
                {{"channel":"a","role":"MASTER","arn":"not-an-arn","wss":"wss://x","https":"https://x","fetched_at":{now}}},
                {{"channel":"b","role":"KING","arn":"{ARN}","wss":"wss://x","https":"https://x","fetched_at":{now}}},
                {{"channel":"c","role":"VIEWER","arn":"{ARN}","wss":"wss://x","https":"https://x","fetched_at":{now}}}
            ]}}"#
        );
        std::fs::write(&path, text).unwrap();
        let cache = EndpointCache::new(Duration::from_secs(60), Some(path.clone()));
        assert!(cache.get("a", Role::Master).is_none());
        assert!(cache.get("c", Role::Viewer).is_some());
        // A directory where the file should be: reading and writing fail, the cache still works in memory.
        let blocked = dir.0.join("blocked");
        std::fs::create_dir_all(&blocked).unwrap();
        let cache = EndpointCache::new(Duration::from_secs(60), Some(blocked));
        cache.put("demo", Role::Master, ARN, &endpoints(1));
        assert!(cache.get("demo", Role::Master).is_some());
        // A file in a directory that does not exist.
        let cache = EndpointCache::new(Duration::from_secs(60), Some(dir.0.join("missing/endpoints.json")));
        cache.put("demo", Role::Master, ARN, &endpoints(1));
        assert!(cache.get("demo", Role::Master).is_some());
    }
}
