//! Models and property checks behind the fuzz targets in `fuzz_targets/`.
//!
//! Each module is also compiled into a proptest suite of the crate it tests (included with
//! `#[path]`), so the same properties run under `cargo test` on stable. The input types are
//! declared inside `fuzz_input!`, which here derives `arbitrary::Arbitrary` and in the
//! proptest suites (which do not depend on `arbitrary`) leaves the items as they are.

/// Derives `arbitrary::Arbitrary` for the items inside.
macro_rules! fuzz_input {
    ($($item:item)*) => { $( #[derive(arbitrary::Arbitrary)] $item )* };
}

pub mod blk;
pub mod ext4;
pub mod log;
