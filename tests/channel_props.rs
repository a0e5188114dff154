//! Property tests of the channel: random IU bytes never panic it, and random
//! sequences of commands, held executions and task management keep the
//! credit and receive-ring invariants and never lose or corrupt data.

mod common;

use common::*;
use proptest::prelude::*;
use srptd::wire::{Rsp, Tag, TmFunction};

fn check_credit_invariant(sim: &Sim) {
    let c = sim.ch.credits();
    assert_eq!(c.initiator_limit() + c.in_use() + c.owed(), c.granted());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Garbage, truncated and mutated IUs: the channel answers, logs the
    /// initiator out, or disconnects, and never panics.
    #[test]
    fn random_ius_never_panic(ius in proptest::collection::vec(
        (prop_oneof![Just(0x00u8), Just(0x01), Just(0x02), Just(0x03), Just(0x41), Just(0x42), any::<u8>()],
         proptest::collection::vec(any::<u8>(), 0..200)), 1..20), shared in any::<bool>()) {
        let t = target_with("ram:1M,bs=512");
        let ring = SharedRing::new(40, 8320);
        let mut sim = if shared { Sim::login_shared(&t, &ring, |_| {}) } else { Sim::login(&t, |_| {}) };
        for (op, mut body) in ius {
            if sim.disconnect_requested {
                break;
            }
            body.insert(0, op);
            sim.send_raw(&body);
            check_credit_invariant(&sim);
        }
        // Whatever happened, a shared ring gets every slot back.
        sim.ch.handle_disconnect();
        sim.pump();
        prop_assert!(sim.closed);
        prop_assert!(ring.all_posted(), "{} of 40 slots posted", ring.posted());
    }

    /// Valid commands with random fields (CDB bytes, descriptor counts,
    /// lengths) mutated after building.
    #[test]
    fn mutated_commands_never_panic(seed in any::<u64>(), flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6),
                                    layout in 0usize..4) {
        let t = target_with("ram:1M,bs=512");
        let mut sim = Sim::login(&t, |_| {});
        let tag = sim.new_tag();
        let layout = [Layout::Direct, Layout::Indirect(3), Layout::External { n: 5, in_iu: 1 }, Layout::Immediate][layout];
        let data = pattern(2048, seed);
        let mut iu = sim.build_cmd(tag, 0, &rw16(0x8a, seed % 1000, 4), Some(&data), 0, layout);
        for (pos, v) in flips {
            let p = pos % iu.len();
            iu[p] = v;
        }
        sim.send_raw(&iu);
        check_credit_invariant(&sim);
        prop_assert!(sim.ch.in_flight() <= 1);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        lba: u64,
        blocks: u32,
        layout: usize,
        seed: u64,
    },
    Read {
        lba: u64,
        blocks: u32,
        layout: usize,
    },
    HeldInquiry,
    Release,
    Abort(usize),
    AbortTaskSet,
    LunReset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..120, 1u32..9, 0usize..4, any::<u64>()).prop_map(|(lba, blocks, layout, seed)| Op::Write { lba, blocks, layout, seed }),
        4 => (0u64..120, 1u32..9, 0usize..3).prop_map(|(lba, blocks, layout)| Op::Read { lba, blocks, layout }),
        2 => Just(Op::HeldInquiry),
        2 => Just(Op::Release),
        1 => (0usize..8).prop_map(Op::Abort),
        1 => Just(Op::AbortTaskSet),
        1 => Just(Op::LunReset),
    ]
}

const LAYOUTS: [Layout; 4] = [
    Layout::Direct,
    Layout::Indirect(3),
    Layout::External { n: 4, in_iu: 1 },
    Layout::Immediate,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A model of the LUN follows every write that completed GOOD; every
    /// GOOD read matches it. Credits always balance, held commands answer
    /// exactly once or not at all (aborted), and at the end every credit
    /// and receive buffer is back.
    #[test]
    fn random_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..60), file in any::<bool>(),
                                        shared in any::<bool>()) {
        let block = 512u32;
        let path = std::env::temp_dir().join(format!("srptd-props-{}-{:?}.img", std::process::id(), std::thread::current().id()));
        let t = if file {
            std::fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
            target_with(&format!("file:{},bs=512", path.display()))
        } else {
            target_with("ram:1M,bs=512")
        };
        let edit = |c: &mut srptd::proto::ChannelConfig| { c.rdma_read_depth = 2; c.sq_depth = 24; };
        let ring = SharedRing::new(40, 8320);
        let mut sim = if shared { Sim::login_shared(&t, &ring, edit) } else { Sim::login(&t, edit) };
        // Clear the power-on unit attention.
        let (r, _) = sim.command(0, &[0u8; 6], None, 0, Layout::Direct);
        prop_assert_eq!(r.status, 2);
        let mut model = vec![0u8; 1 << 20];
        let mut held: Vec<Tag> = Vec::new();
        let mut ua_pending = false;
        for op in ops {
            sim.auto_exec = true;
            match op {
                Op::Write { lba, blocks, layout, seed } => {
                    let layout = LAYOUTS[layout];
                    let len = (blocks * block) as usize;
                    if layout == Layout::Immediate && len > 8192 { continue; }
                    let data = pattern(len, seed);
                    let r = sim.write(0, lba, &data, block, layout);
                    if std::mem::take(&mut ua_pending) && r.status == 2 { continue; }
                    prop_assert_eq!(r.status, 0, "{:?}", r);
                    model[(lba * block as u64) as usize..][..len].copy_from_slice(&data);
                }
                Op::Read { lba, blocks, layout } => {
                    let len = blocks * block;
                    let (r, data) = sim.read(0, lba, len, block, LAYOUTS[layout]);
                    if std::mem::take(&mut ua_pending) && r.status == 2 { continue; }
                    prop_assert_eq!(r.status, 0, "{:?}", r);
                    prop_assert!(data == model[(lba * block as u64) as usize..][..len as usize], "read differs from model");
                }
                Op::HeldInquiry => {
                    if sim.req_lim <= 1 { continue; }
                    sim.auto_exec = false;
                    held.push(sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct));
                }
                Op::Release => {
                    if !sim.held.is_empty() { sim.release_exec(); }
                }
                Op::Abort(i) => {
                    if held.is_empty() { continue; }
                    let victim = held[i % held.len()];
                    let tmf = sim.task_mgmt(0, TmFunction::ABORT_TASK, victim);
                    if !sim.has_response(tmf) { sim.release_all(); }
                    prop_assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
                }
                Op::AbortTaskSet | Op::LunReset => {
                    let f = if matches!(op, Op::LunReset) { TmFunction::LUN_RESET } else { TmFunction::ABORT_TASK_SET };
                    let tmf = sim.task_mgmt(0, f, Tag(0));
                    if !sim.has_response(tmf) { sim.release_all(); }
                    prop_assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
                    ua_pending |= f == TmFunction::LUN_RESET;
                }
            }
            check_credit_invariant(&sim);
            // Every held command answers at most once.
            for tag in &held {
                prop_assert!(sim.responses.iter().filter(|r| r.tag == *tag).count() <= 1);
            }
        }
        sim.release_all();
        for tag in held {
            if sim.has_response(tag) {
                let r = sim.take_response(tag);
                // 0x40: TASK ABORTED, a task set function aborted it.
                prop_assert!(r.status == 0 || r.status == 2 || r.status == 0x40, "{:?}", r);
                prop_assert_eq!(r.flags & !(Rsp::DIUNDER | Rsp::SNSVALID), 0);
            }
        }
        prop_assert_eq!(sim.ch.in_flight(), 0);
        prop_assert_eq!(sim.req_lim, 32, "all credits returned");
        prop_assert_eq!(sim.ch.credits().initiator_limit(), 32);
        if shared {
            prop_assert!(ring.all_posted(), "{} of 40 slots posted", ring.posted());
            sim.logout();
            prop_assert!(sim.closed && ring.all_posted());
        }
        std::fs::remove_file(&path).ok();
    }
}
