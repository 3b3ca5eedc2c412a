//! The virtio-blk request path of blkrec: see `e4race_fuzz::blk`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: e4race_fuzz::blk::Input| {
    e4race_fuzz::blk::run(&input);
});
