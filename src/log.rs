//! Library logging: one process-wide sink, replaceable at run time.
//!
//! Without a sink, lines at or above the level named by `KVS_LOG` (`error`,
//! `warn`, `info`, `debug`, `trace`; default `warn`) go to stderr. The C layer
//! installs a sink that forwards to the application's log callback. The sink may
//! be called from any thread.

use std::sync::{Arc, RwLock};

/// Severity of a log line; higher is more verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Failures.
    Error = 1,
    /// Problems the library recovered from, e.g. a skipped frame.
    Warn = 2,
    /// Notable events, e.g. a GO_AWAY or a learnt clock skew.
    Info = 3,
    /// Details for debugging.
    Debug = 4,
    /// The most verbose level.
    Trace = 5,
}

impl Level {
    /// The lower-case name, as `KVS_LOG` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// Maps 1..=5 to a level; anything else is `None`.
    pub fn from_number(n: u32) -> Option<Level> {
        [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace].get((n as usize).wrapping_sub(1)).copied()
    }
}

/// Receives `(level, target, message)` for every line at or above its level.
pub type Sink = Arc<dyn Fn(Level, &str, &str) + Send + Sync>;

struct Logger {
    min_level: Level,
    sink: Sink,
}

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

/// The level named by `KVS_LOG`, read once per process.
fn env_level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("KVS_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => Level::Error,
        "info" => Level::Info,
        "debug" => Level::Debug,
        "trace" => Level::Trace,
        _ => Level::Warn,
    })
}

/// Installs `sink` for lines at or above `min_level`, or restores stderr
/// output filtered by `KVS_LOG` when `sink` is `None` (`min_level` is then
/// ignored). The replaced sink is dropped after the lock is released.
pub fn set_sink(min_level: Level, sink: Option<Sink>) {
    let previous = {
        let mut logger = LOGGER.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *logger, sink.map(|sink| Logger { min_level, sink }))
    };
    drop(previous);
}

/// True when a line at `level` would be written anywhere.
pub fn enabled(level: Level) -> bool {
    let logger = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    let min = logger.as_ref().map_or_else(env_level, |l| l.min_level);
    level <= min
}

/// Writes one line; use the `log!` macro to skip formatting when disabled.
pub fn write(level: Level, target: &str, message: &str) {
    let sink = {
        let logger = LOGGER.read().unwrap_or_else(|e| e.into_inner());
        logger.as_ref().map(|l| l.sink.clone())
    };
    match sink {
        Some(sink) => sink(level, target, message),
        None => eprintln!("kvs-signaling {} {target}: {message}", level.as_str()),
    }
}

/// `log!(Level::Warn, "target", "format {}", args)`.
macro_rules! log {
    ($level:expr, $target:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, $target, &format!($($arg)+));
        }
    };
}
pub(crate) use log;
