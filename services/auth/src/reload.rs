//! Configuration that changes while Tally runs (API keys, a JWKS, a policy): loaded from a file
//! or a URL, swapped in whole when its bytes change, and kept as it was when the new bytes do
//! not parse (logged), so a bad edit never locks everyone out.
//!
//! Files are re-read every poll interval and on SIGHUP. Comparing bytes rather than
//! modification times catches two edits within one second, and follows the symlink swaps
//! Kubernetes does when a mounted Secret changes.

use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Largest file or response a source may be.
const SOURCE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Least time between two early looks asked for by [`Reloading::wake`]: tokens naming unknown
/// keys must not make Tally fetch a JWKS URL back to back.
const WAKE_INTERVAL_MIN: Duration = Duration::from_secs(5);

/// Where a reloadable thing comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, read again at every poll, on SIGHUP and when woken; at most 4 MiB.
    File(PathBuf),
    /// A URL fetched with GET at the same times (10 s timeout); any answer but 2xx, or a body over
    /// 4 MiB, is an error and the previous value stays.
    Url(String),
}

type Parse<T> = fn(&[u8]) -> Result<T, String>;

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{} from {origin}", self.what),
            None => write!(f, "{} (fixed)", self.what),
        }
    }
}

/// The current value of a source, replaced when the source changes.
pub struct Reloading<T> {
    what: &'static str,
    /// `None` for a fixed value.
    origin: Option<Origin>,
    parse: Parse<T>,
    current: ArcSwap<T>,
    /// The bytes `current` was parsed from (or last refused), to skip unchanged reads.
    seen: Mutex<Vec<u8>>,
    wake: Notify,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Loads `source` once; an error here is a start-up error. `what` names it in messages.
    pub async fn open(what: &'static str, source: Source, parse: Parse<T>) -> Result<Arc<Self>, String> {
        let origin = Origin::new(source).map_err(|e| format!("{what}: {e}"))?;
        let bytes = origin.fetch().await.map_err(|e| format!("{what} {origin}: {e}"))?;
        let value = parse(&bytes).map_err(|e| format!("{what} {origin}: {e}"))?;
        Ok(Arc::new(Reloading {
            what,
            origin: Some(origin),
            parse,
            current: ArcSwap::from_pointee(value),
            seen: Mutex::new(bytes),
            wake: Notify::new(),
        }))
    }

    /// A value that was never loaded from anywhere and never changes (tests, `tally dev`'s own
    /// key).
    pub fn fixed(what: &'static str, value: T) -> Arc<Self> {
        Arc::new(Reloading {
            what,
            origin: None,
            parse: |_| Err("a fixed value is not reloaded".into()),
            current: ArcSwap::from_pointee(value),
            seen: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }

    /// The current value, for a short look (a guard: not to be held across awaits or for long).
    pub fn current(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// The current value, held for longer than a [`Reloading::current`] guard should be.
    pub fn current_arc(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Asks the watcher for an early look (for example when a token names an unknown key).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reads the source again; swaps the value in when the bytes changed and parse.
    pub async fn refresh(&self) -> Result<bool, String> {
        let Some(origin) = &self.origin else { return Ok(false) };
        let bytes = origin.fetch().await?;
        if *self.seen.lock().expect("not poisoned") == bytes {
            return Ok(false);
        }
        let parsed = (self.parse)(&bytes);
        *self.seen.lock().expect("not poisoned") = bytes;
        self.current.store(Arc::new(parsed?));
        Ok(true)
    }

    /// Keeps the value fresh until `stop`: every `every`, on SIGHUP, and when woken (at most
    /// once per [`WAKE_INTERVAL_MIN`]).
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut hangup = hangup();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = this.wake.notified() => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(last + WAKE_INTERVAL_MIN) => {}
                        }
                    }
                    Some(()) = recv(&mut hangup) => {}
                }
                last = tokio::time::Instant::now();
                match this.refresh().await {
                    Ok(true) => tracing::info!("{this:?} reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!("{this:?} not reloaded, the previous one stays in force: {e}"),
                }
            }
        })
    }
}

fn hangup() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Where a value is read from; a URL with the HTTP client every fetch of it shares.
enum Origin {
    File(PathBuf),
    Url { url: String, client: reqwest::Client },
}

impl Origin {
    fn new(source: Source) -> Result<Origin, String> {
        Ok(match source {
            Source::File(path) => Origin::File(path),
            Source::Url(url) => {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build();
                Origin::Url { url, client: client.map_err(|e| e.to_string())? }
            }
        })
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let bytes = match self {
            Origin::File(path) => tokio::fs::read(path).await.map_err(|e| e.to_string())?,
            Origin::Url { url, client } => fetch_url(client, url).await?,
        };
        match bytes.len() <= SOURCE_BYTES_MAX {
            true => Ok(bytes),
            false => Err(format!("{} bytes; at most {SOURCE_BYTES_MAX}", bytes.len())),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Url { url, .. } => f.write_str(url),
        }
    }
}

async fn fetch_url(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    if response.content_length().is_some_and(|n| n > SOURCE_BYTES_MAX as u64) {
        return Err(format!("larger than {SOURCE_BYTES_MAX} bytes"));
    }
    Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(bytes: &[u8]) -> Result<u64, String> {
        std::str::from_utf8(bytes).map_err(|e| e.to_string())?.trim().parse().map_err(|e| format!("{e}"))
    }

    #[tokio::test]
    async fn a_changed_file_is_swapped_in_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let n = Reloading::open("number", Source::File(path.clone()), number).await.unwrap();
        assert_eq!(**n.current(), 1);
        assert!(!n.refresh().await.unwrap(), "unchanged bytes are not parsed again");
        std::fs::write(&path, "2").unwrap();
        assert!(n.refresh().await.unwrap());
        assert_eq!(**n.current(), 2);
        std::fs::write(&path, "two").unwrap();
        assert!(n.refresh().await.is_err());
        assert_eq!(**n.current(), 2, "a file that does not parse leaves the last good value");
        std::fs::remove_file(&path).unwrap();
        assert!(n.refresh().await.is_err());
        assert_eq!(**n.current(), 2);
    }

    #[tokio::test]
    async fn a_source_that_does_not_load_is_a_start_up_error() {
        let missing = Source::File("/nonexistent/keys.toml".into());
        let e = Reloading::open("API keys", missing, number).await.err().unwrap();
        assert!(e.starts_with("API keys /nonexistent/keys.toml: "), "{e}");
    }
}
