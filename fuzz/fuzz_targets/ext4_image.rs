//! Corrupted ext4 images through ext4-reader: see `e4race_fuzz::ext4`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: e4race_fuzz::ext4::Ext4Input| {
    e4race_fuzz::ext4::run(&input);
});
