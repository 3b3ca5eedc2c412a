//! The guest's serial console: saved to `console.log` as it streams, kept in memory for
//! excerpts, and watched for the lines that end a run (panic, oops, BUG) or that the agent
//! prints when it cannot reach the host.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e4race_agent::{CONSOLE_ERROR_PREFIX, CONSOLE_MISSING_PREFIX};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// A panic, oops or BUG: the run ends as KERNEL-ERROR.
    KernelError { headline: String, excerpt: String },
    /// The agent found drivers missing (config option names).
    MissingConfig(Vec<String>),
    /// The agent failed before the control channel was up.
    AgentError(String),
}

/// Whether a console line reports a kernel error that ends the run. WARN lines do not: they
/// are findings for the kernel-log oracle.
pub fn is_fatal_kernel_line(line: &str) -> bool {
    oracles::classify_console_line(line).is_some_and(|c| c.is_fatal())
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    event: Option<(ConsoleEvent, usize)>,
    eof: bool,
}

/// A handle on the console stream.
pub struct ConsoleWatch {
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<u64>,
}

impl ConsoleWatch {
    pub fn spawn(
        mut src: impl AsyncRead + Unpin + Send + 'static,
        log: PathBuf,
    ) -> std::io::Result<Self> {
        let mut file = std::fs::File::create(&log).map_err(|e| {
            std::io::Error::new(e.kind(), format!("creating {}: {e}", log.display()))
        })?;
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, changed) = watch::channel(0u64);
        let st = state.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            let mut partial = Vec::new();
            let mut n_events = 0u64;
            loop {
                let n = match src.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let _ = file.write_all(&buf[..n]);
                let _ = file.flush();
                partial.extend_from_slice(&buf[..n]);
                while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = partial.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                    let idx = s.lines.len();
                    if s.event.is_none() {
                        if let Some(ev) = classify(&line) {
                            s.event = Some((ev, idx));
                        }
                    }
                    s.lines.push(line);
                }
                n_events += 1;
                let _ = tx.send(n_events);
            }
            if !partial.is_empty() {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                s.lines.push(String::from_utf8_lossy(&partial).into_owned());
            }
            st.lock().unwrap_or_else(|p| p.into_inner()).eof = true;
            let _ = tx.send(u64::MAX);
        });
        Ok(ConsoleWatch { state, changed })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// The first run-ending event, with the excerpt from its line on (at most 60 lines).
    pub fn event(&self) -> Option<ConsoleEvent> {
        let s = self.lock();
        let (ev, idx) = s.event.clone()?;
        Some(match ev {
            ConsoleEvent::KernelError { headline, .. } => {
                let from = idx.saturating_sub(3);
                let excerpt = s.lines[from..]
                    .iter()
                    .take(60)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                ConsoleEvent::KernelError { headline, excerpt }
            }
            other => other,
        })
    }

    /// Waits until the console has been quiet for a second (or ended), at most 5 s.
    pub async fn settle(&self) {
        let mut rx = self.changed.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self.lock().eof {
                return;
            }
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return; } }
                _ = tokio::time::sleep(Duration::from_secs(1)) => return,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    pub fn tail(&self, n: usize) -> String {
        let s = self.lock();
        let from = s.lines.len().saturating_sub(n);
        s.lines[from..].join("\n")
    }

    pub fn text(&self) -> String {
        self.lock().lines.join("\n")
    }
}

fn classify(line: &str) -> Option<ConsoleEvent> {
    if let Some(pos) = line.find(CONSOLE_MISSING_PREFIX) {
        let opts = line[pos + CONSOLE_MISSING_PREFIX.len()..]
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        return Some(ConsoleEvent::MissingConfig(opts));
    }
    if let Some(pos) = line.find(CONSOLE_ERROR_PREFIX) {
        return Some(ConsoleEvent::AgentError(
            line[pos + CONSOLE_ERROR_PREFIX.len()..].trim().to_string(),
        ));
    }
    if is_fatal_kernel_line(line) {
        return Some(ConsoleEvent::KernelError {
            headline: strip_timestamp(line).to_string(),
            excerpt: String::new(),
        });
    }
    None
}

/// `[    3.123456] text` → `text`.
pub fn strip_timestamp(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with('[') {
        if let Some(end) = t.find(']') {
            return t[end + 1..].trim_start();
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_agent_and_kernel_lines() {
        assert_eq!(
            classify("e4race-agent: E4RACE-MISSING-CONFIG: CONFIG_EXT4_FS,CONFIG_VIRTIO_BLK"),
            Some(ConsoleEvent::MissingConfig(vec![
                "CONFIG_EXT4_FS".into(),
                "CONFIG_VIRTIO_BLK".into()
            ]))
        );
        assert!(matches!(
            classify("[    5.1] Kernel panic - not syncing: sysrq triggered crash"),
            Some(ConsoleEvent::KernelError { .. })
        ));
        assert_eq!(
            classify("[    1.0] virtio_blk virtio1: [vda] 524288 512-byte logical blocks"),
            None
        );
    }

    #[tokio::test]
    async fn watch_records_first_event_and_excerpt() {
        let (mut w, r) = tokio::io::duplex(4096);
        let dir = tempfile::tempdir().unwrap();
        let c = ConsoleWatch::spawn(r, dir.path().join("console.log")).unwrap();
        w.write_all(b"boot\r\n[ 1.0] sysrq: Trigger a crash\n[ 1.1] Kernel panic - not syncing: sysrq triggered crash\n[ 1.2] CPU: 0 PID: 1\n")
            .await
            .unwrap();
        drop(w);
        c.settle().await;
        match c.event() {
            Some(ConsoleEvent::KernelError { headline, excerpt }) => {
                assert_eq!(
                    headline,
                    "Kernel panic - not syncing: sysrq triggered crash"
                );
                assert!(excerpt.contains("CPU: 0 PID: 1"), "{excerpt}");
            }
            other => panic!("{other:?}"),
        }
        let saved = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert!(saved.starts_with("boot\r\n"));
    }

    use tokio::io::AsyncWriteExt;
}
