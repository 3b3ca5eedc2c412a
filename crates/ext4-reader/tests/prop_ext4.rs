//! Property tests: patched (corrupted) ext4 images through every reader API. The model and
//! checks are fuzz/src/ext4.rs, shared with the `ext4_image` fuzz target (see fuzz/README.md);
//! the two seed images it patches are fuzz/seeds/ext4-{extents,indirect}.img.

/// Items as they are (the fuzz crate derives `arbitrary::Arbitrary` here).
macro_rules! fuzz_input {
    ($($item:item)*) => { $($item)* };
}

#[path = "../../../fuzz/src/ext4.rs"]
mod model;

use model::{Ext4Input, Patch, Value, Where};
use proptest::collection::vec;
use proptest::prelude::*;

fn patch() -> impl Strategy<Value = Patch> {
    let at = prop_oneof![
        8 => (any::<u16>(), any::<u16>()).prop_map(|(blk, off)| Where::Meta { blk, off }),
        2 => any::<u16>().prop_map(Where::Super),
        1 => any::<u32>().prop_map(Where::Any),
    ];
    let value = prop_oneof![
        2 => vec(any::<u8>(), 1..8).prop_map(Value::Bytes),
        1 => any::<u16>().prop_map(Value::U16),
        2 => prop_oneof![0..4u32, 0..1024u32, any::<u32>()].prop_map(Value::U32),
        1 => any::<u64>().prop_map(Value::U64),
        3 => any::<u8>().prop_map(Value::Flip),
    ];
    (at, value).prop_map(|(at, value)| Patch { at, value })
}

fn input() -> impl Strategy<Value = Ext4Input> {
    prop_oneof![
        20 => (any::<bool>(), vec(patch(), 0..12), vec((prop_oneof![1..70u32, any::<u32>()], any::<u32>()), 0..4))
            .prop_map(|(indirect, patches, probes)| Ext4Input::Patched { indirect, patches, probes }),
        1 => vec(any::<u8>(), 0..4096).prop_map(Ext4Input::Raw),
    ]
}

proptest! {
    #![proptest_config(testkit::proptest_config(256))]

    /// Anything may fail, nothing may panic or hang; what succeeds keeps its invariants.
    #[test]
    fn corrupted_images_never_panic(input in input()) {
        model::run(&input);
    }
}

/// The seed images themselves read back as mkfs made them.
#[test]
fn seed_images_are_clean() {
    for indirect in [false, true] {
        model::run(&Ext4Input::Patched {
            indirect,
            patches: vec![],
            probes: vec![],
        });
    }
}
