//! A point of a write log: where `e4race replay --to` stops and where `e4race inspect --at`
//! looks. One parser ([`LogPosition::from_str`]) and one way of finding it in a log
//! ([`Approach`], used by both replays).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The accepted spellings, for messages and `--help`.
pub const POSITION_FORMS: &str =
    "end, seq:N, mark:NAME, flush:N or entries:N (e.g. seq:42, mark:round-0-done, flush:3)";

/// A point of a write log. Replays apply records up to and including it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPosition {
    /// `end`: the whole log.
    End,
    /// `entries:N`: the first N records/entries (dm-log-writes `replay-log --limit N`).
    Entries(u64),
    /// `seq:N`: records with seq <= N (our log only; dm-log-writes files have no seqs).
    Seq(u64),
    /// `mark:NAME`: up to and including the first mark with this name (`--end-mark`).
    Mark(String),
    /// `flush:N`: up to and including the N-th flush, counted from 1.
    Flush(u64),
}

/// A `--to` / `--at` value that is not a [`LogPosition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Not one of the forms.
    #[error("{input:?} is not a log position: use {POSITION_FORMS}")]
    UnknownForm { input: String },
    /// `seq:`, `flush:` or `entries:` followed by something other than a number.
    #[error("{input:?}: {number:?} is not a whole number: use {POSITION_FORMS}")]
    NotANumber { input: String, number: String },
    /// `mark:` with nothing after it.
    #[error("{input:?}: the mark name is empty: use {POSITION_FORMS}")]
    EmptyMark { input: String },
    /// `flush:0`: flushes count from 1.
    #[error("{input:?}: flushes count from 1 (flush:1 is the first): use {POSITION_FORMS}")]
    FlushZero { input: String },
}

impl FromStr for LogPosition {
    type Err = PositionError;

    fn from_str(s: &str) -> Result<Self, PositionError> {
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| PositionError::NotANumber {
                input: s.to_string(),
                number: v.to_string(),
            })
        };
        match s.split_once(':') {
            None if s == "end" => Ok(LogPosition::End),
            Some(("seq", v)) => Ok(LogPosition::Seq(number(v)?)),
            Some(("entries", v)) => Ok(LogPosition::Entries(number(v)?)),
            Some(("flush", v)) => match number(v)? {
                0 => Err(PositionError::FlushZero {
                    input: s.to_string(),
                }),
                n => Ok(LogPosition::Flush(n)),
            },
            Some(("mark", "")) => Err(PositionError::EmptyMark {
                input: s.to_string(),
            }),
            Some(("mark", name)) => Ok(LogPosition::Mark(name.to_string())),
            _ => Err(PositionError::UnknownForm {
                input: s.to_string(),
            }),
        }
    }
}

/// The form it parses from: `end`, `seq:N`, `mark:NAME`, ...
impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogPosition::End => f.write_str("end"),
            LogPosition::Entries(n) => write!(f, "entries:{n}"),
            LogPosition::Seq(n) => write!(f, "seq:{n}"),
            LogPosition::Mark(m) => write!(f, "mark:{m}"),
            LogPosition::Flush(n) => write!(f, "flush:{n}"),
        }
    }
}

/// A replay's way through a log towards a position, told about one record at a time:
/// [`Approach::stops_before`] before applying it, [`Approach::stops_after`] after.
#[derive(Debug)]
pub(crate) struct Approach<'a> {
    to: &'a LogPosition,
    records: u64,
    flushes: u64,
    reached: bool,
}

impl<'a> Approach<'a> {
    pub(crate) fn new(to: &'a LogPosition) -> Self {
        Approach {
            to,
            records: 0,
            flushes: 0,
            reached: false,
        }
    }

    /// Whether the position lies before the next record (`next_seq`: its seq, if the format
    /// has seqs and it could be read).
    pub(crate) fn stops_before(&mut self, next_seq: Option<u64>) -> bool {
        let stop = match *self.to {
            LogPosition::Entries(n) => self.records >= n,
            LogPosition::Seq(s) => next_seq.is_some_and(|q| q > s),
            _ => false,
        };
        self.reached |= stop;
        stop
    }

    /// Counts a record just applied; whether the position is right after it.
    pub(crate) fn stops_after(
        &mut self,
        seq: Option<u64>,
        flush: bool,
        mark: Option<&[u8]>,
    ) -> bool {
        self.records += 1;
        self.flushes += u64::from(flush);
        let stop = match self.to {
            LogPosition::Flush(n) => flush && self.flushes == *n,
            LogPosition::Mark(m) => mark == Some(m.as_bytes()),
            LogPosition::Seq(s) => seq == Some(*s),
            _ => false,
        };
        self.reached |= stop;
        stop
    }

    /// After the replay: an error unless the position was met (`end` always is, and so is
    /// `entries:N` by a log of exactly N records).
    pub(crate) fn finish(&self) -> Result<(), Error> {
        let reached = self.reached
            || match *self.to {
                LogPosition::End => true,
                LogPosition::Entries(n) => self.records >= n,
                _ => false,
            };
        if reached {
            Ok(())
        } else {
            Err(Error::StopNotReached(self.to.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LogPosition, PositionError> {
        s.parse()
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        for (text, want) in [
            ("end", LogPosition::End),
            ("seq:0", LogPosition::Seq(0)),
            ("seq:12", LogPosition::Seq(12)),
            ("entries:17", LogPosition::Entries(17)),
            ("flush:3", LogPosition::Flush(3)),
            (
                "mark:round-1-done",
                LogPosition::Mark("round-1-done".into()),
            ),
            // Everything after the first colon is the name.
            (
                "mark:migrate-start file 3:x",
                LogPosition::Mark("migrate-start file 3:x".into()),
            ),
        ] {
            assert_eq!(parse(text), Ok(want.clone()), "{text}");
            assert_eq!(want.to_string(), text);
        }
    }

    #[test]
    fn an_unknown_form_lists_the_forms() {
        for typo in ["sq:3", "END", "", "end:", "yesterday", "3", "mark"] {
            let e = parse(typo).unwrap_err();
            assert_eq!(
                e,
                PositionError::UnknownForm {
                    input: typo.to_string()
                }
            );
            assert_eq!(
                e.to_string(),
                format!("{typo:?} is not a log position: use end, seq:N, mark:NAME, flush:N or entries:N (e.g. seq:42, mark:round-0-done, flush:3)")
            );
        }
    }

    #[test]
    fn a_bad_number_names_it() {
        for (typo, number) in [
            ("seq:x", "x"),
            ("seq:", ""),
            ("seq:-1", "-1"),
            ("flush: 2", " 2"),
            ("entries:1e3", "1e3"),
        ] {
            let e = parse(typo).unwrap_err();
            let msg = e.to_string();
            assert_eq!(
                e,
                PositionError::NotANumber {
                    input: typo.to_string(),
                    number: number.to_string()
                }
            );
            assert!(
                msg.starts_with(&format!(
                    "{typo:?}: {number:?} is not a whole number: use end, seq:N"
                )),
                "{msg}"
            );
            assert!(msg.ends_with(POSITION_FORMS), "{msg}");
        }
    }

    #[test]
    fn an_empty_mark_and_flush_zero_are_refused() {
        let e = parse("mark:").unwrap_err();
        assert!(e.to_string().contains("the mark name is empty"), "{e}");
        let e = parse("flush:0").unwrap_err();
        assert!(e.to_string().contains("flush:1 is the first"), "{e}");
    }

    /// Feeds `flags` (F = flush, M = mark "m", . = write) with seqs 0.., stopping where the
    /// approach says; returns how many records were applied, or None if never reached.
    fn walk(to: &LogPosition, log: &str) -> Option<usize> {
        let mut a = Approach::new(to);
        let mut applied = 0;
        for (seq, c) in (0u64..).zip(log.chars()) {
            if a.stops_before(Some(seq)) {
                break;
            }
            applied += 1;
            let mark = (c == 'M').then_some(&b"m"[..]);
            if a.stops_after(Some(seq), c == 'F', mark) {
                break;
            }
        }
        a.finish().ok().map(|()| applied)
    }

    #[test]
    fn approach_stops_at_each_kind_of_position() {
        let log = ".F.M.F..";
        assert_eq!(walk(&LogPosition::End, log), Some(8));
        assert_eq!(walk(&LogPosition::Entries(0), log), Some(0));
        assert_eq!(walk(&LogPosition::Entries(5), log), Some(5));
        assert_eq!(walk(&LogPosition::Entries(8), log), Some(8));
        assert_eq!(walk(&LogPosition::Entries(9), log), None);
        assert_eq!(walk(&LogPosition::Seq(0), log), Some(1));
        assert_eq!(walk(&LogPosition::Seq(6), log), Some(7));
        assert_eq!(walk(&LogPosition::Seq(8), log), None);
        assert_eq!(walk(&LogPosition::Flush(1), log), Some(2));
        assert_eq!(walk(&LogPosition::Flush(2), log), Some(6));
        assert_eq!(walk(&LogPosition::Flush(3), log), None);
        assert_eq!(walk(&LogPosition::Mark("m".into()), log), Some(4));
        assert_eq!(walk(&LogPosition::Mark("n".into()), log), None);
    }

    #[test]
    fn an_unreached_position_is_named_in_the_error() {
        let to = LogPosition::Mark("nope".into());
        let e = Approach::new(&to).finish().unwrap_err().to_string();
        assert!(e.contains("mark:nope is not in the log"), "{e}");
    }
}
