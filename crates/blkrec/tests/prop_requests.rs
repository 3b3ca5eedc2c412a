//! Property tests of the virtio-blk request path (BlkDevice driven through its
//! `VhostUserBackend` methods with a split virtqueue in guest memory). The model and checks
//! are fuzz/src/blk.rs, shared with the `blk_request` fuzz target (see fuzz/README.md).

/// Items as they are (the fuzz crate derives `arbitrary::Arbitrary` here).
macro_rules! fuzz_input {
    ($($item:item)*) => { $($item)* };
}

#[path = "../../../fuzz/src/blk.rs"]
mod model;

use model::{Addr, Cfg, DwzSeg, Input, Op, RawDesc, Req, ReqType, Sector};
use proptest::collection::vec;
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        4 => any::<u16>().prop_map(Addr::Data),
        3 => any::<u16>().prop_map(Addr::Low),
        1 => any::<u16>().prop_map(Addr::Gap),
        1 => any::<u16>().prop_map(Addr::End),
        1 => any::<u16>().prop_map(Addr::Ring),
        1 => any::<u64>().prop_map(Addr::Raw),
    ]
}

fn raw_desc() -> impl Strategy<Value = RawDesc> {
    (
        addr(),
        prop_oneof![Just(1u32), Just(16), 0..4096u32, any::<u32>()],
        prop_oneof![0..8u16, any::<u16>()],
        prop_oneof![0..16u16, any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| RawDesc {
            addr,
            len,
            flags,
            next,
        })
}

fn req_type() -> impl Strategy<Value = ReqType> {
    prop_oneof![
        3 => Just(ReqType::In),
        5 => Just(ReqType::Out),
        1 => Just(ReqType::Flush),
        1 => Just(ReqType::GetId),
        2 => Just(ReqType::Discard),
        2 => Just(ReqType::WriteZeroes),
        1 => any::<u32>().prop_map(ReqType::Raw),
    ]
}

fn sector() -> impl Strategy<Value = Sector> {
    prop_oneof![
        6 => any::<u8>().prop_map(Sector::Small),
        1 => any::<u8>().prop_map(Sector::NearEnd),
        1 => any::<u64>().prop_map(Sector::Raw),
    ]
}

fn seg() -> impl Strategy<Value = DwzSeg> {
    (
        sector(),
        any::<u32>(),
        prop::bool::weighted(0.1),
        any::<u32>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(sector, num, raw_num, flags, raw_flags)| DwzSeg {
            sector,
            num,
            raw_num,
            flags,
            raw_flags,
        })
}

fn req() -> impl Strategy<Value = Req> {
    (
        (
            req_type(),
            prop::bool::weighted(0.1),
            sector(),
            0..17u8,
            prop::option::weighted(0.1, any::<u16>()),
        ),
        (
            any::<u8>(),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.05),
        ),
        (
            vec(seg(), 0..2),
            any::<u32>(),
            any::<u8>(),
            prop::bool::weighted(0.6),
        ),
    )
        .prop_map(
            |(
                (rtype, barrier, sector, sectors, odd_len),
                (pieces, merge, indirect, wrong_dir),
                (segs, ioprio, fill, kick),
            )| Req {
                rtype,
                barrier,
                sector,
                sectors,
                odd_len,
                pieces,
                merge,
                indirect,
                wrong_dir,
                segs,
                ioprio,
                fill,
                kick,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => req().prop_map(Op::Req),
        2 => (any::<u16>(), raw_desc()).prop_map(|(index, desc)| Op::Desc { index, desc }),
        1 => (addr(), vec(raw_desc(), 0..4)).prop_map(|(at, descs)| Op::Table { at, descs }),
        1 => (addr(), vec(any::<u8>(), 0..64)).prop_map(|(at, bytes)| Op::Mem { at, bytes }),
        1 => (addr(), req_type(), sector()).prop_map(|(at, rtype, sector)| Op::Header { at, rtype, sector }),
        1 => vec(prop_oneof![0..8u16, any::<u16>()], 0..4).prop_map(|heads| Op::Avail { heads }),
        3 => (0..4u8).prop_map(|count| Op::Kick { count }),
        1 => prop_oneof![0..8u16, any::<u16>()].prop_map(|delta| Op::BogusIdx { delta }),
        1 => (prop_oneof![Just(32u32), any::<u32>()], vec(any::<u8>(), 0..3)).prop_map(|(offset, bytes)| Op::SetConfig { offset, bytes }),
        1 => (0..100u32, 0..100u16).prop_map(|(offset, size)| Op::GetConfig { offset, size }),
        1 => (0..2u16, 0..2u8, any::<bool>()).prop_map(|(device_event, thread, out)| Op::BadEvent { device_event, thread, out }),
        1 => any::<u64>().prop_map(Op::Ack),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    (
        (
            prop::bool::weighted(0.1),
            prop_oneof![Just(8u8), any::<u8>()],
            prop_oneof![Just(u64::MAX), any::<u64>()],
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        vec(op(), 0..24),
    )
        .prop_map(
            |(
                (read_only, qsize_log2, features_mask),
                (event_idx, signal_every_zero, call_fd, serial),
                ops,
            )| Input {
                cfg: Cfg {
                    read_only,
                    qsize_log2,
                    features_mask,
                    event_idx,
                    signal_every_zero,
                    call_fd,
                    serial,
                },
                ops,
            },
        )
}

proptest! {
    #![proptest_config(testkit::proptest_config(256))]

    /// Status bytes, used lengths, the image against a shadow model, the log's records
    /// against the OK requests, and replay of the log onto the original image.
    #[test]
    fn requests_match_the_model(input in input()) {
        model::run(&input);
    }
}

/// Found by fuzzing (fuzz/artifacts-found/blk_request/event-idx-bogus-avail-idx-hang): with
/// VIRTIO_RING_F_EVENT_IDX, an avail index more than the queue size ahead of the device made
/// `handle_queue_event` spin forever (`pop_descriptor_chain` returned None every time, while
/// `enable_notification` kept answering "more buffers"). Fixed; it must return.
#[test]
fn event_idx_with_a_bogus_avail_index_returns() {
    let input = Input {
        cfg: Cfg {
            read_only: false,
            qsize_log2: 6,
            features_mask: u64::MAX,
            event_idx: true,
            signal_every_zero: false,
            call_fd: false,
            serial: false,
        },
        ops: vec![Op::BogusIdx { delta: 1000 }],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        model::run_with(&input, true);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok(),
        "handle_event did not return within 5 s (it spins; the thread is left running)"
    );
}
