//! Online defrag racing mmap writers on stock kernels. Expected, and why: no lost or stale
//! block and a clean e2fsck (move_extent_per_page/folio holds the page lock and i_data_sem
//! around each swap), with stores inside the MOVE_EXT windows as evidence the race ran, and
//! files that really were fragmented before.
//!
//! Invariant (holds across seeds): no loss on a correct kernel whatever the interleaving;
//! the "exercised" counters need one aimed store (each store waits for the move covering
//! its block, so they are not left to chance) and defrag reducing the extent count, which
//! the interleaved allocation guarantees.

mod common;
use common::*;
use e4race_report::Exercise;

fn assert_stock_defrag_is_clean(kernel: &str, driver: &str, rounds: &str) {
    let _l = vm_lock();
    let runs = tempfile::tempdir().unwrap();
    let o = e4race(
        &[
            "run",
            "defrag-mmap",
            "--kernel",
            kernel,
            "--rounds",
            rounds,
            "--seed",
            "5",
            "--driver",
            driver,
        ],
        runs.path(),
    );
    let r = report(&run_dir(runs.path()));
    assert_eq!(o.status.code(), Some(0), "{}\n{r:?}", text(&o));
    let Some(Exercise::DefragMmap(ev)) = &r.exercise else {
        panic!("not a defrag-mmap exercise: {r:?}");
    };
    assert_eq!(ev.host.lost_blocks, 0, "{r:?}");
    assert_eq!(ev.host.e2fsck, "clean", "{r:?}");
    assert!(
        ev.stores_inside_move_windows > 0,
        "race not exercised: {r:?}"
    );
    assert!(ev.overwrites > 0 && ev.hole_fills > 0, "{r:?}");
    if driver == "move-ext" {
        // Aimed writers: stores land in the very range MOVE_EXT is swapping, including
        // fills of preallocated (unwritten) blocks, the no-copy path of
        // move_extent_per_page().
        assert!(
            ev.stores_into_range_being_moved > 0 && ev.unwritten_fills_into_range_being_moved > 0,
            "aimed race not exercised: {r:?}"
        );
    }
    assert!(
        ev.mean_extents_before > ev.mean_extents_after,
        "defrag had nothing to do: {r:?}"
    );
}

#[test]
fn vm_defrag_mmap_stock_6_1_is_clean() {
    assert_stock_defrag_is_clean("6.1", "move-ext", "2");
}

#[test]
fn vm_defrag_mmap_stock_6_12_is_clean() {
    assert_stock_defrag_is_clean("6.12", "move-ext", "2");
}

#[test]
fn vm_e4defrag_on_stock_6_1_is_clean() {
    assert_stock_defrag_is_clean("6.1", "e4defrag", "1");
}
