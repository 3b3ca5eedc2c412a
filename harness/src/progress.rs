//! Progress lines on stderr.

use std::time::Instant;

/// Progress lines on stderr, stamped with the time since the run started.
#[derive(Clone)]
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            start: Instant::now(),
            quiet,
        }
    }

    pub fn step(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }
}
