use super::*;
use std::collections::VecDeque;

use crate::scsi::backstore::BackstoreConfig;
use crate::scsi::lun::{LunConfig, Target, TargetConfig};

pub(crate) fn memory(cfg: &ChannelConfig) -> ChannelMemory {
    ChannelMemory::with(&cfg.memory_layout(), DmaBuf::new).unwrap()
}

pub(crate) fn test_channel(cfg: ChannelConfig) -> std::io::Result<Channel> {
    let mem = memory(&cfg);
    Channel::new(cfg, nexus(), mem)
}

fn nexus() -> Arc<Nexus> {
    let bs = BackstoreConfig::parse("ram:1M", "lun").unwrap();
    let t = Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        ..TargetConfig::default()
    })
    .unwrap();
    t.nexus([7; 16])
}

fn shared(slots: u32, slot_size: u32) -> SharedRecv {
    SharedRecv {
        buf: Arc::new(DmaBuf::new(slots as usize * slot_size as usize).unwrap()),
        slot_size,
        slots,
    }
}

/// Lands a TEST UNIT READY in `slot` and completes the receive.
fn tur(ch: &mut Channel, slot: u32, tag: u64) {
    let mut iu = [0u8; 64];
    let n = wire::Cmd::new(Tag(tag), [0; 8], &[0u8; 6]).emit(&mut iu).unwrap();
    let (off, _) = ch.recv_slot(slot);
    ch.recv_buf().write(off as usize, &iu[..n]);
    ch.handle_completion(WrId::recv(slot), true, n as u32);
}

fn drain_actions(ch: &mut Channel) -> Vec<Action> {
    std::iter::from_fn(|| ch.poll_action()).collect()
}

fn posted(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PostRecv { slot } => Some(*slot),
            _ => None,
        })
        .collect()
}

#[test]
fn shared_ring_posts_nothing_at_start_and_checks_its_geometry() {
    let mut cfg = ChannelConfig::new(8260, Some(68), 4);
    cfg.shared_recv = Some(shared(16, 8320));
    let mut ch = Channel::new(cfg.clone(), nexus(), memory(&cfg)).unwrap();
    assert!(ch.shares_recv());
    assert_eq!(ch.poll_action(), None, "the shared ring is posted by its owner");
    assert_eq!(ch.recv_slot(15), (15 * 8320, 8320));
    // A slot smaller than the granted IU length cannot work.
    cfg.shared_recv = Some(shared(16, 4096));
    assert!(Channel::new(cfg.clone(), nexus(), memory(&cfg)).is_err());
    // A ring shorter than its geometry says.
    let mut bad = shared(16, 8320);
    bad.slots = 17;
    cfg.shared_recv = Some(bad);
    assert!(test_channel(cfg).is_err());
}

fn executes(actions: &[Action]) -> Vec<CmdId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Execute { cmd } => Some(*cmd),
            _ => None,
        })
        .collect()
}

/// Every slot the channel is handed goes back exactly once, also for
/// requests whose response was posted before the queue pair drained;
/// an initiator that overdraws while the send queue is full (its
/// TASK SET FULL answers wait, holding slots) is logged out once it
/// holds more slots than credits plus the reserve.
#[test]
fn shared_slots_go_back_once_and_overdraw_is_bounded() {
    let mut cfg = ChannelConfig::new(8260, Some(68), 4);
    cfg.shared_recv = Some(shared(64, 8320));
    // Room for two responses on the send queue.
    cfg.sq_depth = 2 + TARGET_IU_SLOTS;
    let mut ch = test_channel(cfg).unwrap();
    let mut all = Vec::new();
    // 1: unit attention, answered at once (response on the send queue);
    // 2-5: executing, holding the 4 credits; 6: TASK SET FULL, answered;
    // 7, 8: TASK SET FULL waiting for send-queue room.
    for i in 0..8 {
        tur(&mut ch, 10 + i, i as u64);
        all.extend(drain_actions(&mut ch));
    }
    assert_eq!(ch.in_flight(), 8);
    assert_eq!(ch.stats().task_set_full, 3);
    let running = executes(&all);
    assert_eq!(running.len(), 4);
    // 9: no receive slot left to hold it.
    tur(&mut ch, 40, 99);
    let acts = drain_actions(&mut ch);
    assert_eq!(posted(&acts), vec![40]);
    assert!(acts.iter().any(|a| matches!(a, Action::PostSend(w)
        if WrId::decode(w.wr_id).unwrap().kind == WrKind::TargetIu)));
    assert_eq!(ch.in_flight(), 8);
    assert_eq!(ch.stats().protocol_errors, 1);
    all.extend(acts);
    // Drain with responses still on the send queue and commands still
    // executing: nothing is posted twice; a receive completing late
    // goes straight back; executing commands give theirs back when the
    // backstore finishes.
    ch.handle_disconnect();
    ch.handle_send_queue_drained(Instant::now());
    ch.handle_receives_flushed();
    assert!(!ch.is_closed());
    tur(&mut ch, 50, 100);
    all.extend(drain_actions(&mut ch));
    for id in running {
        ch.handle_exec_done(id, crate::scsi::Completion::good(0));
    }
    all.extend(drain_actions(&mut ch));
    assert!(ch.is_closed());
    let mut slots = posted(&all);
    slots.sort_unstable();
    assert_eq!(slots, vec![10, 11, 12, 13, 14, 15, 16, 17, 40, 50]);
    // A failed shared receive was consumed: it goes back too.
    ch.handle_completion(WrId::recv(51), false, 0);
    assert_eq!(posted(&drain_actions(&mut ch)), vec![51]);
    // A slot outside the ring is ignored.
    ch.handle_completion(WrId::recv(64), true, 64);
    assert_eq!(ch.poll_action(), None);
}

/// Responses give their slot and credit back when posted: an initiator
/// reusing the credit before the send completion is polled must never
/// run the channel out of contexts or send slots.
#[test]
fn credits_reused_before_send_completions() {
    let mut ch = test_channel(ChannelConfig::new(8260, Some(68), 4)).unwrap();
    let mut free: VecDeque<u32> = posted(&drain_actions(&mut ch)).into();
    let mut tag = 0;
    // TEST UNIT READYs, executed at once; no send ever completes, and
    // every slot given back is used again right away, as a fast
    // initiator may do with the credit the response returns.
    for _ in 0..40 {
        let Some(slot) = free.pop_front() else { break };
        tag += 1;
        tur(&mut ch, slot, tag);
        let acts = drain_actions(&mut ch);
        free.extend(posted(&acts));
        for id in executes(&acts) {
            ch.handle_exec_done(id, crate::scsi::Completion::good(0));
            free.extend(posted(&drain_actions(&mut ch)));
        }
    }
    assert!(ch.in_flight() as u32 <= ch.config().max_contexts());
    assert_eq!(ch.stats().protocol_errors, 0);
}

#[test]
fn own_ring_keeps_its_slots_when_closing() {
    let mut ch = test_channel(ChannelConfig::new(8260, Some(68), 4)).unwrap();
    let initial = posted(&drain_actions(&mut ch));
    assert_eq!(initial, (0..6).collect::<Vec<_>>());
    tur(&mut ch, 0, 1);
    drain_actions(&mut ch);
    ch.handle_disconnect();
    ch.handle_send_queue_drained(Instant::now());
    ch.handle_receives_flushed();
    tur(&mut ch, 1, 2);
    let acts = drain_actions(&mut ch);
    assert!(posted(&acts).is_empty(), "{acts:?}");
    assert!(ch.is_closed());
}

/// A drain ends when both the send queue drained and the receives were
/// flushed, in either order; not before.
#[test]
fn drain_needs_send_queue_and_receives() {
    for receives_first in [false, true] {
        let mut ch = test_channel(ChannelConfig::new(8260, Some(68), 4)).unwrap();
        drain_actions(&mut ch);
        let t0 = Instant::now();
        ch.handle_disconnect();
        assert!(matches!(drain_actions(&mut ch).as_slice(), [Action::Disconnect]));
        assert!(ch.is_draining());
        assert_eq!(
            ch.poll_timeout(),
            None,
            "no deadline before the send queue drained"
        );
        if receives_first {
            ch.handle_receives_flushed();
            assert!(ch.is_draining());
            ch.handle_send_queue_drained(t0);
        } else {
            ch.handle_send_queue_drained(t0);
            assert!(ch.is_draining());
            ch.handle_receives_flushed();
        }
        assert!(!ch.is_draining());
        assert!(ch.is_closed());
        assert_eq!(ch.poll_timeout(), None);
    }
}

/// Receives that are never flushed end the drain RECV_FLUSH_GRACE after
/// the send queue drained, and not a moment earlier; a command still on
/// the backstore keeps the channel open until it finishes.
#[test]
fn drain_grace_period_ends_a_drain_without_flushes() {
    let mut ch = test_channel(ChannelConfig::new(8260, Some(68), 4)).unwrap();
    drain_actions(&mut ch);
    // The first command reports the power-on unit attention; the second
    // goes to the backstore.
    tur(&mut ch, 0, 1);
    for a in drain_actions(&mut ch) {
        if let Action::PostSend(wr) = a {
            ch.handle_completion(wr.wr_id, true, 0);
        }
    }
    tur(&mut ch, 1, 2);
    let running = executes(&drain_actions(&mut ch));
    let t0 = Instant::now();
    ch.handle_disconnect();
    drain_actions(&mut ch);
    ch.handle_timeout(t0 + RECV_FLUSH_GRACE * 10);
    assert!(
        ch.is_draining(),
        "no grace period runs before the send queue drained"
    );
    ch.handle_send_queue_drained(t0);
    assert_eq!(ch.poll_timeout(), Some(t0 + RECV_FLUSH_GRACE));
    ch.handle_timeout(t0 + RECV_FLUSH_GRACE - Duration::from_millis(1));
    assert!(ch.is_draining());
    ch.handle_timeout(t0 + RECV_FLUSH_GRACE);
    assert!(!ch.is_draining());
    assert_eq!(ch.poll_timeout(), None);
    let [cmd] = running.as_slice() else {
        panic!("the TEST UNIT READY was not handed to the backstore: {running:?}");
    };
    assert!(!ch.is_closed(), "a command on the backstore keeps the channel");
    ch.handle_exec_done(*cmd, Completion::good(0));
    drain_actions(&mut ch);
    assert!(ch.is_closed());
}

/// SRP r16a 6.6: once SRP_T_LOGOUT is posted, a request that arrives
/// (here before its send completed) gets no answer.
#[test]
fn nothing_is_answered_after_t_logout() {
    let mut ch = test_channel(ChannelConfig::new(8260, Some(68), 4)).unwrap();
    drain_actions(&mut ch);
    let mut iu = [0u8; 64];
    iu[0] = 0x7f; // unknown IU type
    let off = ch.recv_slot_offset(0);
    ch.recv_buf().write(off as usize, &iu);
    ch.handle_completion(WrId::recv(0), true, 64);
    let acts = drain_actions(&mut ch);
    let t_logout: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::PostSend(wr) => Some(*wr),
            _ => None,
        })
        .collect();
    assert_eq!(t_logout.len(), 1, "one SRP_T_LOGOUT: {acts:?}");
    tur(&mut ch, 1, 2);
    let acts = drain_actions(&mut ch);
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::PostSend(_) | Action::Execute { .. })),
        "a request after SRP_T_LOGOUT was served: {acts:?}"
    );
    ch.handle_completion(t_logout[0].wr_id, true, 0);
    assert!(matches!(drain_actions(&mut ch).as_slice(), [Action::Disconnect]));
}
