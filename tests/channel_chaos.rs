//! The chaos harness of the `channel_sim` fuzz target (tests/common/chaos.rs)
//! as a bounded proptest, so every `cargo test` run checks its oracles:
//! one answer per command, balanced credits, reads that return what was
//! written, and nothing leaked after disconnect.

mod common;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chaos_sequences_keep_oracles(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        common::chaos::run(&data);
    }
}

/// The harness is not vacuous: over fixed inputs it checks reads against
/// the shadow, sees aborts, and ends live channels as well as broken ones.
#[test]
fn chaos_harness_reaches_its_oracles() {
    let (mut reads, mut aborted, mut live, mut broken) = (0, 0, 0, 0);
    for seed in 0..120u64 {
        let o = common::chaos::run(&common::pattern(400, seed));
        reads += o.good_reads_checked;
        aborted += o.aborted;
        if o.disconnected {
            broken += 1;
        } else {
            live += 1;
        }
    }
    assert!(
        reads > 100 && aborted > 5 && live > 10 && broken > 10,
        "{reads} {aborted} {live} {broken}"
    );
}
