//! Progress lines on stderr, or one live line of a suite's progress display.

use std::time::Instant;

/// Progress of one run: lines on stderr stamped with the time since the run started, or, in
/// `suite --jobs N` on a terminal, the message of that run's live line.
#[derive(Clone)]
pub struct Progress {
    start: Instant,
    quiet: bool,
    line: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            start: Instant::now(),
            quiet,
            line: None,
        }
    }

    /// Progress shown as the message of `line` (one guest's line of a multi-line display).
    pub fn on_line(line: indicatif::ProgressBar) -> Self {
        Progress {
            start: Instant::now(),
            quiet: false,
            line: Some(line),
        }
    }

    pub fn step(&self, msg: &str) {
        if let Some(line) = &self.line {
            line.set_message(msg.to_string());
        } else if !self.quiet {
            eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_becomes_the_message_of_its_live_line() {
        let line = indicatif::ProgressBar::hidden();
        let p = Progress::on_line(line.clone());
        p.step("booting the guest");
        assert_eq!(line.message(), "booting the guest");
    }
}
