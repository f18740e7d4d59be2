//! Shared helpers for the integration tests: an emulator on its own runtime
//! thread (so tests may call the blocking C API from plain threads), a scripted
//! WebSocket peer for inbound garbage, and waiting with deadlines.
#![allow(dead_code)]

use kvs_signaling::emulator::{Emulator, EmulatorConfig};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An emulator running on a private runtime thread; stopped on drop.
pub struct EmulatorThread {
    pub endpoint: String,
    pub arn: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: std::sync::Arc<std::sync::Mutex<Option<Emulator>>>,
}

impl EmulatorThread {
    pub fn start() -> EmulatorThread {
        EmulatorThread::start_with(EmulatorConfig::default())
    }

    pub fn start_with(mut config: EmulatorConfig) -> EmulatorThread {
        config.channels = vec!["test-channel".into()];
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot_in_thread = slot.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let emulator = Emulator::start(config).await.expect("emulator starts");
                let info = (emulator.ws_endpoint(), emulator.channel_arn("test-channel").unwrap());
                *slot_in_thread.lock().unwrap() = Some(emulator);
                ready_tx.send(info).unwrap();
                let _ = stop_rx.await;
                let emulator = slot_in_thread.lock().unwrap().take();
                if let Some(emulator) = emulator {
                    emulator.shutdown().await;
                }
            });
        });
        let (endpoint, arn) = ready_rx.recv_timeout(Duration::from_secs(10)).expect("emulator ready");
        EmulatorThread { endpoint, arn, stop: Some(stop), thread: Some(thread), stats: slot }
    }

    /// Runs `f` on the emulator (panics once it has stopped).
    pub fn with<R>(&self, f: impl FnOnce(&Emulator) -> R) -> R {
        f(self.stats.lock().unwrap().as_ref().expect("emulator running"))
    }

    pub fn stats(&self) -> kvs_signaling::emulator::EmulatorStats {
        self.stats.lock().unwrap().as_ref().map(|e| e.stats()).unwrap_or_default()
    }
}

impl Drop for EmulatorThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `check` every 5 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first event of `events` that `pick` maps to a value, within `timeout`
/// (panics when none comes).
pub async fn next_matching<T>(
    events: &mut kvs_signaling::client::EventReceiver,
    timeout: Duration,
    mut pick: impl FnMut(kvs_signaling::client::ClientEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(timeout, async {
        loop {
            if let Some(found) = pick(events.recv().await.expect("event sink alive")) {
                return found;
            }
        }
    })
    .await
    .expect("event in time")
}
