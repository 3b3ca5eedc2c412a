//! writelog's reader, stats, dm-log-writes export and replay: see `e4race_fuzz::log`.
//!
//! The first byte picks the mode (mod 3): 0 = the rest is raw log bytes (also tried as a
//! dm-log-writes file), 1 = an `arbitrary` description of a valid log and how it is cut /
//! damaged (checked against a model), 2 = a log of unconstrained records (huge sectors and
//! lengths) written by `LogWriter`, maybe damaged, then read / stats / export / replay.
#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 3 == 0 {
        e4race_fuzz::log::run_raw(rest);
    } else if mode % 3 == 2 {
        if let Ok(input) = e4race_fuzz::log::WildInput::arbitrary_take_rest(Unstructured::new(rest))
        {
            e4race_fuzz::log::run_wild(&input);
        }
    } else if let Ok(input) =
        e4race_fuzz::log::ValidInput::arbitrary_take_rest(Unstructured::new(rest))
    {
        if std::env::var_os("E4RACE_FUZZ_DEBUG").is_some() {
            eprintln!("{input:#?}");
        }
        e4race_fuzz::log::run_valid(&input);
    }
});
