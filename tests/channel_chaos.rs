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

/// A `channel_sim` crash (docs/fuzzing.md, "Bugs found"): a second ABORT
/// TASK SET answered at once over WRITEs an earlier one had aborted while
/// they still executed; their data landed after the answer, over newer
/// writes, and a READ returned it.
#[test]
fn second_abort_task_set_over_executing_writes() {
    let input = [
        0x80, 0xa0, 0x00, 0xb0, 0xff, 0x00, 0x20, 0x03, 0x00, 0x07, 0x00, 0x04, 0x24, 0x53, 0x07, 0x00, 0x20,
        0x16, 0x00, 0xe4, 0x00, 0x02, 0xc0, 0x01, 0xf6, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6,
        0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0xdd, 0xe6, 0xe6, 0xe6, 0xe6, 0xe6, 0x00, 0xe4, 0x00, 0x02, 0xc0,
        0x01, 0xe6, 0xe6, 0xe6, 0xe6, 0x4d, 0x0f, 0x00, 0x20, 0xf6, 0x50, 0x0f, 0x80, 0xa0, 0x00, 0xb0, 0x00,
        0x07, 0x00, 0x20, 0x03, 0x6a, 0x23, 0x07, 0x00, 0x05, 0x24, 0x04, 0x50, 0x07, 0x00, 0x20, 0x79, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf6, 0x50, 0x0f, 0x1a, 0x00, 0x00, 0x03, 0x00, 0xff, 0xff,
        0xff, 0xff,
    ];
    common::chaos::run(&input);
}

/// Commands waiting at the heads of two wait queues for each other: the
/// head of the RDMA READ credit queue also needed a send-queue slot, whose
/// queue's head needed a READ credit, and neither could move while the
/// other queued, though the channel had both free (a fuzz finding).
#[test]
fn waiters_at_the_heads_of_two_queues_move() {
    common::chaos::run(include_bytes!(
        "regressions/channel_sim-read-credit-send-slot.bin"
    ));
}

/// CLEAR TASK SET for a LUN other than 0 while a command with a malformed
/// CDB executed: the command must end in exactly one response, decided by
/// the logical unit its LUN field decodes to, not by the raw LUN bytes (a
/// fuzz finding of the 9.3 M-execution campaign).
#[test]
fn clear_task_set_beside_a_malformed_command() {
    common::chaos::run(include_bytes!(
        "regressions/channel_sim-clear-task-set-malformed.bin"
    ));
}

/// A mutated READ whose descriptor pointed at the external table of a
/// WRITE sent after it: the target's RDMA WRITE of the READ's data
/// overwrote the table before the target fetched it, and the WRITE was
/// answered 0Eh/03h. The initiator's own memory was wrong, not the target:
/// the simulated initiator registers data-out buffers and tables for
/// remote read only, as an initiator may, and this input must replay clean.
#[test]
fn a_wild_data_in_cannot_overwrite_another_commands_table() {
    common::chaos::run(include_bytes!(
        "regressions/channel_sim-wild-data-in-over-a-table.bin"
    ));
}

/// A WRITE answered after a malformed command that was in flight beside
/// it and had written the same blocks after it (overlapping SIMPLE tasks
/// complete in any order): the oracle kept the WRITE's data as the blocks'
/// content and a later READ "differed". A write's data is known only if no
/// malformed command was in flight at any time during it; this input must
/// replay clean.
#[test]
fn a_write_beside_a_malformed_command_leaves_its_blocks_unknown() {
    common::chaos::run(include_bytes!(
        "regressions/channel_sim-wild-write-beside-a-write.bin"
    ));
}

/// Replays a fuzz input: `CHAOS_INPUT=crash-file [CHAOS_TRACE=1] cargo
/// test --test channel_chaos replay_file -- --ignored --nocapture`.
#[test]
#[ignore]
fn replay_file() {
    let p = std::env::var("CHAOS_INPUT").expect("CHAOS_INPUT");
    common::chaos::run(&std::fs::read(p).unwrap());
}
