//! A byte-driven harness over [`Sim`]: the input decodes into a sequence of
//! operations (well-formed READ/WRITE/INQUIRY/TEST UNIT READY with every
//! descriptor layout, malformed IUs, held executions released in any order,
//! failed work requests, task management, logout, disconnect, target
//! shutdown, simulated time) and every step is checked against oracles:
//!
//! (a) every command sent on a live channel is answered exactly once once
//!     nothing is held, or never if a task management function aborted it
//!     (a task set function answers the tasks it aborts TASK ABORTED);
//!     never more than once, whatever happens;
//! (b) credits balance: the channel's credit identity holds, the
//!     initiator's request limit never goes negative and equals the
//!     channel's view, and is back to the granted value at quiescence;
//! (c) a shadow of the LUN follows every GOOD write; a GOOD read of blocks
//!     the shadow knows returns the shadow;
//! (d) after disconnect, drain and release of every held execution the
//!     channel is closed and a shared ring has every slot back.
//!
//! Used by the `channel_sim` fuzz target and the `channel_chaos` proptest.

use std::collections::HashMap;
use std::time::Duration;

use srptd::proto::{ChannelConfig, RECV_FLUSH_GRACE};
use srptd::wire::{Opcode, Rsp, Tag, TmFunction};

use super::*;

/// Whether `CHAOS_TRACE` is set (looked up once: the fuzz target runs
/// millions of inputs).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CHAOS_TRACE").is_some())
}

/// Credits the simulated login grants.
const GRANTED: i64 = 32;
/// Most operations one input runs.
const MAX_OPS: usize = 96;

/// Reads the input a byte at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Read {
        lba: u64,
        blocks: u32,
        in_range: bool,
        vers: Vec<u64>,
        known: bool,
        wild: u64,
    },
    Write {
        lba: u64,
        blocks: u32,
        in_range: bool,
        data: Vec<u8>,
        /// `wild_epoch` when sent: a malformed command in flight at any
        /// time during the write may have written its blocks after it.
        wild: u64,
    },
    /// INQUIRY or TEST UNIT READY.
    Other,
    /// `lun0`: addressed to the LUN every command uses.
    Tmf {
        func: TmFunction,
        task_tag: Tag,
        lun0: bool,
    },
    /// A mutated IU. `cmd`: it still has the SRP_CMD opcode and a tag, so
    /// it must be answered.
    Malformed { cmd: bool },
}

#[derive(Debug)]
struct Tracked {
    tag: Tag,
    seq: usize,
    kind: Kind,
    /// Sent while the channel served commands (not draining, no logout).
    live: bool,
    /// Sent after the target began its shutdown (answered BUSY).
    shutting_down: bool,
    responses: u32,
    aborted: bool,
    /// Addressed to LUN 0 (None: a mutated IU too short to tell).
    lun0: Option<bool>,
    /// A task management function may have aborted it.
    maybe_aborted: bool,
}

/// What the harness saw, for the proptest to report coverage.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub ops: usize,
    pub good_reads_checked: usize,
    pub good_writes: usize,
    pub aborted: usize,
    pub disconnected: bool,
}

struct Chaos {
    sim: Sim,
    ring: Option<SharedRing>,
    block: u32,
    nblocks: u64,
    shadow: Shadow,
    known: Vec<bool>,
    ver: Vec<u64>,
    writers: Vec<u32>,
    contended: Vec<bool>,
    /// Malformed commands not yet answered or aborted: they may write
    /// anywhere, so nothing is known while any is pending.
    wild_pending: u32,
    /// Bumped whenever a malformed command is sent or finishes.
    wild_epoch: u64,
    tracked: Vec<Tracked>,
    by_tag: HashMap<u64, usize>,
    /// False once an IU the channel may not count as a request was sent.
    credit_exact: bool,
    shutting_down: bool,
    /// No logout, disconnect, failed work or opcode mutation: the channel
    /// stays up to the end, where quiescence is checked.
    calm: bool,
    out: Outcome,
}

thread_local! {
    /// Shadows of finished runs, zero again. A fresh 1 MiB vector per input
    /// costs more than the run under AddressSanitizer (it maps, poisons and
    /// unpoisons the whole of it).
    static SPARE_SHADOWS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The shadow of the LUN's bytes: zero at the start of a run, like the LUN.
/// It remembers what was written and zeroes only that when the run ends,
/// keeping the vector for the next run.
struct Shadow {
    bytes: Vec<u8>,
    dirty: Vec<(usize, usize)>,
}

impl Shadow {
    fn zeroed(len: usize) -> Shadow {
        let bytes = SPARE_SHADOWS
            .with(|s| {
                let mut s = s.borrow_mut();
                let i = s.iter().position(|v| v.len() == len)?;
                Some(s.swap_remove(i))
            })
            .unwrap_or_else(|| vec![0; len]);
        Shadow {
            bytes,
            dirty: Vec::new(),
        }
    }

    fn write(&mut self, off: usize, data: &[u8]) {
        self.bytes[off..off + data.len()].copy_from_slice(data);
        self.dirty.push((off, data.len()));
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for &(off, len) in &self.dirty {
            self.bytes[off..off + len].fill(0);
        }
        let bytes = std::mem::take(&mut self.bytes);
        SPARE_SHADOWS.with(|s| s.borrow_mut().push(bytes));
    }
}

/// Whether SAM LUN bytes address LUN 0, the LUN every command uses: a
/// mutated LUN field may still do so another way (flat space addressing,
/// 4000h), and srptd runs and aborts such a task as LUN 0's.
fn is_lun0(l: &[u8]) -> bool {
    <[u8; 8]>::try_from(l).ok().and_then(srptd::scsi::lun::decode_lun) == Some(0)
}

/// Runs the operations `data` decodes to, panicking on any oracle failure.
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Input(data);
    let cfg = input.u8();
    let shared = cfg & 1 != 0;
    let block: u32 = if cfg & 2 != 0 { 4096 } else { 512 };
    let spec = if block == 4096 {
        "ram:1M,bs=4096"
    } else {
        "ram:256K,bs=512"
    };
    let target = target_with(spec);
    let small_sq = cfg & 8 != 0;
    let read_depth = u32::from((cfg >> 4) & 3) + 1;
    let small_pool = cfg & 0x40 != 0;
    let edit = |c: &mut ChannelConfig| {
        c.rdma_read_depth = read_depth;
        if small_sq {
            c.sq_depth = 24;
        }
        if small_pool {
            c.pool_size = 128 << 10;
        }
    };
    let ring = shared.then(|| SharedRing::new(40, 8320));
    let mut sim = match &ring {
        Some(r) => Sim::login_shared(&target, r, edit),
        None => Sim::login(&target, edit),
    };
    sim.unflushed_recvs = cfg & 4 != 0;
    assert_eq!(sim.req_lim, GRANTED);
    let nblocks = target.luns()[0].num_blocks;
    let mut c = Chaos {
        sim,
        ring,
        block,
        nblocks,
        shadow: Shadow::zeroed((nblocks * u64::from(block)) as usize),
        known: vec![true; nblocks as usize],
        ver: vec![0; nblocks as usize],
        writers: vec![0; nblocks as usize],
        contended: vec![false; nblocks as usize],
        wild_pending: 0,
        wild_epoch: 0,
        tracked: Vec::new(),
        by_tag: HashMap::new(),
        credit_exact: true,
        shutting_down: false,
        calm: cfg & 0x80 != 0,
        out: Outcome::default(),
    };
    // After the channel ends, a few more steps (releases, time) still run.
    let mut after_end = 0;
    while !input.is_empty() && c.out.ops < MAX_OPS && after_end < 4 {
        after_end += usize::from(!c.serving());
        c.out.ops += 1;
        c.step(&mut input);
        c.collect();
        c.check_step();
    }
    c.finish();
    c.out
}

impl Chaos {
    fn serving(&self) -> bool {
        !self.sim.disconnect_requested && !self.sim.closed
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.u8();
        if tracing() {
            eprintln!(
                "op {op:3} req_lim {} held {} serving {} responses so far {}",
                self.sim.req_lim,
                self.sim.held.len(),
                self.serving(),
                self.tracked.iter().filter(|t| t.responses > 0).count()
            );
        }
        match op {
            0..80 => self.rw(input, true),
            80..160 => self.rw(input, false),
            160..176 => self.other(input),
            176..192 => self.sim.auto_exec = !self.sim.auto_exec,
            192..216 => {
                let i = input.u8() as usize;
                self.sim.release_nth(i);
            }
            216..228 => self.malformed(input),
            228..238 => self.tmf(input),
            238..246 => {
                let ms = u64::from(input.u8()) * 8;
                self.sim.advance(Duration::from_millis(ms));
            }
            246..250 => self.sim.release_all(),
            _ if self.calm => self.sim.release_all(),
            _ => self.lifecycle(input),
        }
    }

    /// Logout, disconnect, target shutdown, an unsolicited SRP_CRED_RSP or
    /// a failed work request.
    fn lifecycle(&mut self, input: &mut Input<'_>) {
        match input.u8() % 8 {
            0 => {
                // SRP_I_LOGOUT: the channel ends.
                if self.sim.recv_available() > 0 && self.sim.req_lim > 0 {
                    self.sim.logout();
                }
            }
            1 => {
                self.sim.ch.handle_disconnect();
                self.sim.pump();
            }
            2 => {
                // Target shutdown: BUSY for new commands, then T_LOGOUT.
                if self.serving() {
                    self.shutting_down = true;
                }
                self.sim.ch.logout();
                self.sim.pump();
            }
            3 | 4 => {
                // An unsolicited SRP_CRED_RSP (no credit).
                if self.sim.recv_available() > 0 {
                    let mut b = [0u8; 16];
                    wire::CredRsp {
                        tag: self.sim.new_tag(),
                    }
                    .emit(&mut b)
                    .unwrap();
                    self.sim.send_raw(&b);
                }
            }
            _ => {
                let n = input.u8();
                self.sim.fail_wr_after = Some(u32::from(n % 8));
            }
        }
    }

    /// The number of credits a command needs before the initiator sends it
    /// (like ib_srp, it keeps one for task management).
    fn can_send_cmd(&self) -> bool {
        self.sim.req_lim > 1 && self.sim.recv_available() > 0
    }

    fn layout(&self, input: &mut Input<'_>, len: u32, write: bool) -> Layout {
        let b = input.u8();
        let n = 2 + (b as usize >> 3) % 4;
        match b % 8 {
            0 | 1 => Layout::Direct,
            2 => Layout::Indirect(1),
            3 => Layout::Indirect(n),
            4 => Layout::External { n, in_iu: 0 },
            5 => Layout::External {
                n,
                in_iu: (b as usize >> 5) % n,
            },
            _ if write && len <= 8192 => Layout::Immediate,
            _ => Layout::Indirect(n),
        }
    }

    fn track(&mut self, tag: Tag, kind: Kind) {
        self.track_lun(tag, kind, Some(true));
    }

    fn track_lun(&mut self, tag: Tag, kind: Kind, lun0: Option<bool>) {
        if tracing() {
            eprintln!("  send {tag:?} {kind:?}", kind = DebugKind(&kind));
        }
        let live = self.serving() && !self.shutting_down;
        let seq = self.tracked.len();
        assert!(self.by_tag.insert(tag.0, seq).is_none(), "tag reused");
        self.tracked.push(Tracked {
            tag,
            seq,
            kind,
            live,
            shutting_down: self.shutting_down,
            responses: 0,
            aborted: false,
            lun0,
            maybe_aborted: false,
        });
    }

    fn rw(&mut self, input: &mut Input<'_>, write: bool) {
        let sel = input.u8();
        let blocks = u32::from(sel % 16) + 1;
        let raw = u64::from(input.u16());
        // Mostly in range; some straddle or pass the end.
        let lba = if sel & 0x80 != 0 {
            self.nblocks - 8 + raw % 16
        } else {
            raw % self.nblocks
        };
        let in_range = lba + u64::from(blocks) <= self.nblocks;
        let len = blocks * self.block;
        let layout = self.layout(input, len, write);
        if !self.can_send_cmd() {
            return;
        }
        let cdb: Vec<u8> = match (sel & 0x10 != 0, write) {
            (true, w) => rw10(if w { 0x2a } else { 0x28 }, lba as u32, blocks as u16).to_vec(),
            (false, w) => rw16(if w { 0x8a } else { 0x88 }, lba, blocks).to_vec(),
        };
        let tag = self.sim.new_tag();
        if write {
            let data = pattern_fast(len as usize, u64::from(sel) << 16 | raw);
            let iu = self.sim.build_cmd(tag, 0, &cdb, Some(&data), 0, layout);
            if in_range {
                for b in lba..lba + u64::from(blocks) {
                    let b = b as usize;
                    self.ver[b] += 1;
                    self.known[b] = false;
                    self.writers[b] += 1;
                }
            }
            self.track(
                tag,
                Kind::Write {
                    lba,
                    blocks,
                    in_range,
                    data,
                    wild: self.wild_epoch,
                },
            );
            self.sim.send_request(&iu);
        } else {
            let iu = self.sim.build_cmd(tag, 0, &cdb, None, len, layout);
            let (vers, known) = if in_range {
                let r = lba as usize..(lba + u64::from(blocks)) as usize;
                (self.ver[r.clone()].to_vec(), self.known[r].iter().all(|&k| k))
            } else {
                (Vec::new(), false)
            };
            let kind = Kind::Read {
                lba,
                blocks,
                in_range,
                vers,
                known: known && self.wild_pending == 0,
                wild: self.wild_epoch,
            };
            self.track(tag, kind);
            self.sim.send_request(&iu);
        }
    }

    fn other(&mut self, input: &mut Input<'_>) {
        let b = input.u8();
        if !self.can_send_cmd() {
            return;
        }
        let tag = self.sim.new_tag();
        let iu = if b & 1 == 0 {
            self.sim.build_cmd(tag, 0, &[0u8; 6], None, 0, Layout::Direct)
        } else {
            let layout = self.layout(input, 96, false);
            self.sim
                .build_cmd(tag, 0, &[0x12, 0, 0, 0, 96, 0], None, 96, layout)
        };
        self.track(tag, Kind::Other);
        self.sim.send_request(&iu);
    }

    fn tmf(&mut self, input: &mut Input<'_>) {
        let b = input.u8();
        let pick = input.u8() as usize;
        if self.sim.req_lim < 1 || self.sim.recv_available() == 0 {
            return;
        }
        let (func, task_tag) = match b % 4 {
            0 | 1 => {
                // ABORT TASK of a command sent earlier, or of an unknown tag.
                let t = if self.tracked.is_empty() || b & 0x80 != 0 {
                    Tag(0xdead_0000 + pick as u64)
                } else {
                    self.tracked[pick % self.tracked.len()].tag
                };
                (TmFunction::ABORT_TASK, t)
            }
            2 => (TmFunction::ABORT_TASK_SET, Tag(0)),
            _ => (TmFunction::LUN_RESET, Tag(0)),
        };
        // Sim::task_mgmt allocates the tag: track it before it is sent.
        let tag = self.sim.peek_next_tag();
        self.track(
            tag,
            Kind::Tmf {
                func,
                task_tag,
                lun0: true,
            },
        );
        let t = self.sim.task_mgmt(0, func, task_tag);
        assert_eq!(t, tag);
    }

    fn malformed(&mut self, input: &mut Input<'_>) {
        let base = input.u8();
        if self.sim.recv_available() == 0 || self.sim.req_lim < 2 {
            return;
        }
        let tag = self.sim.new_tag();
        let slot = self.sim.ch.recv_slot_size() as usize;
        let kind = if self.calm { base % 3 } else { base % 4 };
        let mut iu = match kind {
            0 | 1 => {
                let blocks = u32::from(input.u8() % 8) + 1;
                let lba = u64::from(input.u16()) % self.nblocks;
                let len = blocks * self.block;
                let write = base & 4 != 0;
                let layout = self.layout(input, len, write);
                if write {
                    let data = pattern_fast(len as usize, u64::from(base));
                    self.sim
                        .build_cmd(tag, 0, &rw16(0x8a, lba, blocks), Some(&data), 0, layout)
                } else {
                    self.sim
                        .build_cmd(tag, 0, &rw16(0x88, lba, blocks), None, len, layout)
                }
            }
            2 => {
                let mut b = vec![0u8; 48];
                TaskMgmt {
                    tag,
                    sol_not: 0,
                    lun: lun_bytes(0),
                    function: TmFunction(input.u8()),
                    task_tag: Tag(u64::from(input.u8())),
                }
                .emit(&mut b)
                .unwrap();
                b
            }
            _ => {
                let mut b = vec![0u8; 16];
                ILogout { tag }.emit(&mut b).unwrap();
                b
            }
        };
        let n = 1 + input.u8() % 4;
        for _ in 0..n {
            let m = input.u8();
            let pos = input.u16() as usize;
            let v = input.u8();
            match m % 8 {
                // Header bytes: formats, counts, additional CDB length.
                0 if !iu.is_empty() => {
                    let p = [1, 5, 6, 7, 29, 31, 32, 33][pos % 8] % iu.len();
                    iu[p] = v;
                }
                1 | 2 if !iu.is_empty() => {
                    let p = pos % iu.len();
                    iu[p] ^= 1 << (v % 8);
                }
                3 if !iu.is_empty() => {
                    let p = pos % iu.len();
                    iu[p] = v;
                }
                // Descriptor lengths and counts inside the descriptor area.
                4 if iu.len() > 48 => {
                    let p = 48 + pos % (iu.len() - 48);
                    iu[p] = v;
                }
                5 if self.calm && kind == 2 => {}
                5 if self.calm => iu.truncate((pos % (iu.len() + 1)).max(16)),
                5 => iu.truncate(pos % (iu.len() + 1)),
                6 => {
                    let add = (pos % 64) + 1;
                    let room = slot.saturating_sub(iu.len());
                    iu.resize(iu.len() + add.min(room), v);
                }
                _ if self.calm => {}
                _ => {
                    // The opcode itself.
                    if let Some(o) = iu.first_mut() {
                        *o = [0x02, 0x01, 0x03, 0x41, 0x42, 0x00, 0x80, v][pos % 8];
                    }
                }
            }
        }
        if iu.len() >= 16 {
            iu[8..16].copy_from_slice(&tag.0.to_be_bytes());
        }
        let op = iu.first().copied();
        let is_cmd = op == Some(Opcode::CMD.0) && iu.len() >= 16;
        let is_tmf = op == Some(Opcode::TSK_MGMT.0);
        if let Ok(t) = TaskMgmt::parse(&iu) {
            // Still a task management request: its own kind of answer.
            self.track(
                tag,
                Kind::Tmf {
                    func: t.function,
                    task_tag: t.task_tag,
                    lun0: is_lun0(&t.lun),
                },
            );
        } else {
            // Anything may be written by a mutated command: the shadow
            // forgets the whole LUN until it is answered.
            self.forget_all();
            self.wild_pending += 1;
            self.wild_epoch += 1;
            let lun0 = iu.get(20..28).map(is_lun0);
            self.track_lun(tag, Kind::Malformed { cmd: is_cmd }, lun0);
        }
        if is_cmd || is_tmf {
            self.sim.send_request(&iu);
        } else {
            // CRED_RSP, AER_RSP, I_LOGOUT or an unknown opcode: none is a
            // request the channel counts.
            self.credit_exact = false;
            self.sim.send_raw(&iu);
        }
    }

    fn forget_all(&mut self) {
        for b in 0..self.nblocks as usize {
            self.ver[b] += 1;
            self.known[b] = false;
        }
    }

    fn wild_done(&mut self) {
        self.wild_pending -= 1;
        self.wild_epoch += 1;
        self.forget_all();
    }

    /// A write in flight over `lba..lba+blocks` finished (answered or
    /// aborted); `data` is what it wrote if it completed GOOD.
    fn write_done(&mut self, lba: u64, blocks: u32, data: Option<&[u8]>) {
        let bs = self.block as usize;
        for (i, b) in (lba..lba + u64::from(blocks)).enumerate() {
            let b = b as usize;
            self.writers[b] -= 1;
            self.ver[b] += 1;
            if self.writers[b] > 0 {
                self.contended[b] = true;
                self.known[b] = false;
            } else if std::mem::take(&mut self.contended[b]) || self.wild_pending > 0 {
                self.known[b] = false;
            } else if let Some(d) = data {
                self.shadow.write(b * bs, &d[i * bs..][..bs]);
                self.known[b] = true;
            } else {
                self.known[b] = false;
            }
        }
    }

    /// Takes the responses the simulated initiator received and checks them.
    fn collect(&mut self) {
        for r in std::mem::take(&mut self.sim.responses) {
            let i = *self
                .by_tag
                .get(&r.tag.0)
                .unwrap_or_else(|| panic!("response for a tag never sent: {r:?}"));
            if tracing() {
                eprintln!(
                    "  rsp {:?} status {:#x} sense {:?} resp {:?}",
                    r.tag,
                    r.status,
                    r.sense_key_asc(),
                    r.resp_data
                );
            }
            let t = &mut self.tracked[i];
            t.responses += 1;
            assert_eq!(t.responses, 1, "second response for {:?}: {r:?}", t.kind);
            assert!(
                !t.aborted,
                "response after its abort was reported: {:?} {r:?}",
                t.kind
            );
            if r.status == 0x40 {
                self.on_task_aborted(i, &r);
                continue;
            }
            // Lent out rather than cloned (a WRITE's kind holds its data);
            // on_response only looks at the commands sent before this one.
            let kind = std::mem::replace(&mut t.kind, Kind::Other);
            let shutting_down = t.shutting_down;
            self.on_response(i, &kind, shutting_down, &r);
            self.tracked[i].kind = kind;
        }
    }

    fn check_sense(r: &Response) -> (u8, u8) {
        let (key, asc, _) = r
            .sense_key_asc()
            .unwrap_or_else(|| panic!("CHECK CONDITION without sense: {r:?}"));
        assert_eq!(r.sense[0] & 0x7f, 0x70, "fixed sense format: {r:?}");
        assert!(
            key != 0 && asc != 0 || key == 6,
            "CHECK CONDITION with an empty sense: {r:?}"
        );
        (key, asc)
    }

    /// The status a well-formed command may get: GOOD (or `bad` sense when
    /// out of range), a UNIT ATTENTION, or BUSY during shutdown.
    fn expect_status(r: &Response, shutting_down: bool, in_range: bool) -> bool {
        if shutting_down && r.status == 0x08 {
            return false;
        }
        match r.status {
            0 => {
                assert!(in_range, "GOOD for an out-of-range command: {r:?}");
                assert_eq!(r.flags & !(Rsp::DIUNDER | Rsp::DOUNDER), 0, "{r:?}");
                true
            }
            2 => {
                let (key, asc) = Self::check_sense(r);
                assert!(
                    key == 6 || !in_range && (key, asc) == (5, 0x21),
                    "unexpected sense for a well-formed command: {r:?}"
                );
                false
            }
            _ => panic!("unexpected status for a well-formed command: {r:?}"),
        }
    }

    fn on_response(&mut self, i: usize, kind: &Kind, shutting_down: bool, r: &Response) {
        match kind {
            Kind::Write {
                lba,
                blocks,
                in_range,
                data,
                wild,
            } => {
                let good = Self::expect_status(r, shutting_down, *in_range);
                if good {
                    assert_eq!(r.flags, 0, "full write: {r:?}");
                    self.out.good_writes += 1;
                }
                if *in_range {
                    // Overlapping SIMPLE tasks complete in any order
                    // (SAM-5 8.6): with a malformed command in flight
                    // beside it, what the blocks hold is unknown.
                    let alone = *wild == self.wild_epoch && self.wild_pending == 0;
                    self.write_done(*lba, *blocks, (good && alone).then_some(&data[..]));
                }
            }
            Kind::Read {
                lba,
                blocks,
                in_range,
                vers,
                known,
                wild,
            } => {
                let good = Self::expect_status(r, shutting_down, *in_range);
                if good {
                    assert_eq!(r.flags, 0, "full read: {r:?}");
                }
                let r0 = *lba as usize..(*lba + u64::from(*blocks)) as usize;
                if good
                    && *known
                    && *wild == self.wild_epoch
                    && self.wild_pending == 0
                    && self.ver[r0.clone()] == vers[..]
                {
                    let bs = self.block as usize;
                    let got = self.sim.data_in(r.tag, *blocks as usize * bs);
                    let want = &self.shadow.bytes[r0.start * bs..r0.end * bs];
                    if got != want {
                        let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                        panic!(
                            "READ lba {lba} blocks {blocks} returned data that differs from what was written, first at byte {first} (tag {:?})",
                            r.tag
                        );
                    }
                    self.out.good_reads_checked += 1;
                }
            }
            Kind::Other => {
                Self::expect_status(r, shutting_down, true);
            }
            Kind::Tmf { func, task_tag, lun0 } => {
                assert_eq!(r.status, 0, "task management answers carry no status: {r:?}");
                assert_eq!(r.resp_data.len(), 4, "task management response data: {r:?}");
                let code = r.resp_data[3];
                // SRP r16a 6.9: complete, invalid fields, not supported,
                // failed, incorrect LUN.
                assert!(
                    matches!(code, 0 | 2 | 4 | 5 | 9),
                    "task management response code: {r:?}"
                );
                // Commands sent before the function, in its scope and not
                // answered yet, are aborted: they must never be answered.
                let seq = self.tracked[i].seq;
                let mut done = Vec::new();
                for t in &mut self.tracked[..seq] {
                    // Task management requests are never aborted.
                    let in_scope = !matches!(t.kind, Kind::Tmf { .. })
                        && (*func != TmFunction::ABORT_TASK || t.tag == *task_tag);
                    if !(*lun0 && in_scope && code == 0 && t.responses == 0 && !t.aborted && t.live) {
                        continue;
                    }
                    if t.lun0 != Some(true) {
                        t.maybe_aborted |= t.lun0.is_none();
                        continue;
                    }
                    {
                        t.aborted = true;
                        done.push(t.kind.clone());
                    }
                }
                for k in done {
                    self.out.aborted += 1;
                    match k {
                        Kind::Write {
                            lba,
                            blocks,
                            in_range: true,
                            ..
                        } => self.write_done(lba, blocks, None),
                        Kind::Malformed { .. } => self.wild_done(),
                        _ => {}
                    }
                }
            }
            Kind::Malformed { .. } => {
                if r.status == 2 {
                    Self::check_sense(r);
                }
                self.wild_done();
            }
        }
    }

    /// TASK ABORTED: only for a task of LUN 0 that a task set function
    /// (LOGICAL UNIT RESET, ABORT or CLEAR TASK SET) sent after it and not
    /// answered yet aborts (`docs/task-management.md`: the issuing nexus's
    /// aborted tasks are answered, ahead of the function).
    fn on_task_aborted(&mut self, i: usize, r: &Response) {
        let t = &self.tracked[i];
        assert!(
            !matches!(t.kind, Kind::Tmf { .. }) && t.lun0 != Some(false),
            "TASK ABORTED for {:?}: {r:?}",
            t.kind
        );
        let seq = t.seq;
        let pending_reset = self.tracked[seq..].iter().any(|f| {
            f.responses == 0
                && matches!(
                    f.kind,
                    Kind::Tmf { func, lun0: true, .. } if func != TmFunction::ABORT_TASK
                )
        });
        assert!(
            pending_reset,
            "TASK ABORTED with no task set function pending: {r:?}"
        );
        self.tracked[i].aborted = true;
        self.out.aborted += 1;
        match self.tracked[i].kind.clone() {
            Kind::Write {
                lba,
                blocks,
                in_range: true,
                ..
            } => self.write_done(lba, blocks, None),
            Kind::Malformed { .. } => self.wild_done(),
            _ => {}
        }
    }

    /// Credit oracle after every step.
    fn check_step(&mut self) {
        let c = self.sim.ch.credits();
        assert_eq!(
            c.initiator_limit() + c.in_use() + c.owed(),
            c.granted(),
            "credit identity"
        );
        assert!(
            self.sim.req_lim >= 0,
            "request limit went negative: {}",
            self.sim.req_lim
        );
        if self.serving() && self.credit_exact {
            assert_eq!(
                self.sim.req_lim,
                i64::from(c.initiator_limit()),
                "the initiator's request limit and the channel's disagree"
            );
        }
        // Nothing held and the channel up: every command has its answer.
        if self.sim.held.is_empty() && self.serving() {
            self.check_all_answered();
        }
    }

    fn check_all_answered(&self) {
        for t in &self.tracked {
            let must =
                t.live && !t.aborted && !t.maybe_aborted && !matches!(t.kind, Kind::Malformed { cmd: false });
            if must && t.responses != 1 {
                for l in self.sim.ch.debug_commands() {
                    eprintln!("  channel: {l}");
                }
            }
            if must {
                assert_eq!(
                    t.responses, 1,
                    "command {:?} ({:?}) sent on a live channel, nothing held: no response",
                    t.tag, t.kind
                );
            }
        }
    }

    fn finish(&mut self) {
        // Quiescence: every execution comes back.
        self.sim.auto_exec = true;
        self.sim.fail_wr_after = None;
        self.sim.release_all();
        self.collect();
        self.check_step();
        if self.serving() && !self.shutting_down {
            self.check_all_answered();
            assert_eq!(self.sim.ch.in_flight(), 0, "commands left in flight");
            if self.credit_exact {
                assert_eq!(self.sim.req_lim, GRANTED, "all credits returned");
                assert_eq!(i64::from(self.sim.ch.credits().initiator_limit()), GRANTED);
            }
        }
        self.out.disconnected = self.sim.disconnect_requested;
        // Tear down: disconnect, drain, release what is still executing.
        self.sim.ch.handle_disconnect();
        self.sim.pump();
        self.sim.release_all();
        self.sim.advance(RECV_FLUSH_GRACE + Duration::from_millis(1));
        self.collect();
        assert!(self.sim.closed, "channel not closed after disconnect and drain");
        assert!(self.sim.ch.is_closed());
        assert_eq!(self.sim.ch.in_flight(), 0, "command contexts leaked");
        if let Some(ring) = &self.ring {
            assert!(
                ring.all_posted(),
                "{} of {} shared slots posted",
                ring.posted(),
                ring.recv.slots
            );
        }
    }
}

/// Kind without the written data, for traces.
struct DebugKind<'a>(&'a Kind);

impl std::fmt::Debug for DebugKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Kind::Write {
                lba,
                blocks,
                in_range,
                ..
            } => write!(
                f,
                "Write {{ lba: {lba}, blocks: {blocks}, in_range: {in_range} }}"
            ),
            k => k.fmt(f),
        }
    }
}
