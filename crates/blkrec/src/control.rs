//! Control socket: line protocol for marks and log syncs.
//!
//! ```text
//! MARK <name>\n  →  OK <seq>\n     (name: rest of the line, 1..=480 bytes, no control chars)
//! SYNC\n         →  OK\n           (log flushed and fdatasync'ed)
//! anything else  →  ERR <message>\n
//! ```
//! Several clients may be connected at once; each is served by its own thread.

use crate::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use writelog::LogWriter;

/// Longest accepted command line.
const MAX_LINE: usize = 4096;

/// Answers one command line (without its newline).
pub fn handle_command(log: &LogWriter, line: &str) -> String {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some(name) = line.strip_prefix("MARK ") {
        match log.mark(name) {
            Ok(seq) => format!("OK {seq}"),
            Err(e) => format!("ERR {e}"),
        }
    } else if line == "SYNC" {
        match log.sync() {
            Ok(()) => "OK".to_string(),
            Err(e) => format!("ERR {e}"),
        }
    } else {
        "ERR unknown command: expected `MARK <name>` or `SYNC`".to_string()
    }
}

fn serve_client(log: &LogWriter, stream: UnixStream) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if line.last() != Some(&b'\n') {
            if line.len() > MAX_LINE {
                let _ = writeln!(out, "ERR line longer than {MAX_LINE} bytes");
            }
            return; // over-long line or EOF mid-line: drop the client
        } else {
            line.pop();
            match std::str::from_utf8(&line) {
                Ok(s) => handle_command(log, s),
                Err(_) => "ERR command is not UTF-8".to_string(),
            }
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

/// Running control socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket) and serves it on a thread.
    pub fn start(path: &Path, log: Arc<LogWriter>) -> Result<Self, Error> {
        let listener = crate::bind_unix(path, "--control")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("blkrec-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let log = log.clone();
                    let _ = std::thread::Builder::new()
                        .name("blkrec-control-conn".into())
                        .spawn(move || serve_client(&log, conn));
                }
            })
            .map_err(|e| Error::Io("spawn the control thread".into(), e))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// Path of the socket.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Client helper: sends `MARK name` on a connected control socket and returns the seq.
pub fn send_mark(stream: &mut UnixStream, name: &str) -> std::io::Result<u64> {
    let reply = request(stream, &format!("MARK {name}"))?;
    reply
        .strip_prefix("OK ")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(reply))
}

/// Client helper: sends one command line and reads the reply line.
pub fn request(stream: &mut UnixStream, line: &str) -> std::io::Result<String> {
    writeln!(stream, "{line}")?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut reply = String::new();
    // Replies are one short line; read byte-wise so no bytes are buffered past it.
    loop {
        let mut b = [0u8; 1];
        let n = std::io::Read::read(r.get_mut(), &mut b)?;
        if n == 0 || b[0] == b'\n' {
            break;
        }
        reply.push(b[0] as char);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use writelog::{LogOptions, LogReader};

    #[test]
    fn control_socket_marks_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(LogWriter::create(dir.path().join("l"), LogOptions::default()).unwrap());
        let sock = dir.path().join("ctl");
        let srv = ControlServer::start(&sock, log.clone()).unwrap();
        let mut s = UnixStream::connect(&sock).unwrap();
        assert_eq!(send_mark(&mut s, "migrate-start file 3").unwrap(), 0);
        assert_eq!(send_mark(&mut s, "second").unwrap(), 1);
        assert_eq!(request(&mut s, "SYNC").unwrap(), "OK");
        assert!(request(&mut s, "BOGUS").unwrap().starts_with("ERR"));
        assert!(request(&mut s, "MARK ").unwrap().starts_with("ERR"));
        drop(s);
        drop(srv);
        assert!(!sock.exists());
        log.finish().unwrap();
        let recs = LogReader::open(dir.path().join("l"))
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].mark.as_deref(), Some("migrate-start file 3"));
    }
}
