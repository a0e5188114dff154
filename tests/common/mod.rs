//! A simulated SRP initiator and "hardware" for running a whole channel in
//! memory: it builds IUs, lands them in the channel's receive slots, carries
//! out the channel's RDMA READ/WRITE and SEND work requests by copying
//! between its own memory and the channel's regions, delivers completions,
//! runs SCSI commands inline (or holds them, to race task management), and
//! keeps the initiator's request limit as the Linux initiator does.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

pub mod chaos;
pub mod pr_model;
pub mod suite;

use srptd::mem::DmaBuf;
use srptd::proto::{
    negotiate, Action, Channel, ChannelConfig, ChannelMemory, CmdId, LoginLimits, Region, SharedRecv,
    TargetPortId, WorkRequest, WrId, WrOpcode,
};
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Nexus, Target, TargetConfig};
use srptd::wire::{
    self, Cmd, CredReq, CredRsp, DataDesc, DirectDesc, ILogout, ImmediateDesc, IndirectDesc, LoginRequest,
    Opcode, Rsp, TLogout, Tag, TaskMgmt, TmFunction, BUF_FMT_DIRECT, BUF_FMT_INDIRECT,
};

pub const TARGET_PORT: TargetPortId = TargetPortId {
    id_ext: 0x0002_c903_0001_0001,
    ioc_guid: 0x0002_c903_0001_0001,
};
pub const INITIATOR: [u8; 16] = [0x11; 16];
/// The Linux initiator's immediate data offset (48 + 16 + 4).
pub const IMM_OFFSET: u16 = 68;
const REMOTE_BASE: u64 = 0x7f00_0000_0000;

/// The two halves of the simulated initiator's memory. The target may
/// RDMA WRITE only into `DataIn`; data-out buffers and descriptor tables
/// sit in `DataOut`, registered for remote read only (as an initiator may
/// register them), so a mutated command's data-in cannot overwrite
/// another command's data-out or table: it fails as a remote access error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arena {
    DataIn = 0,
    DataOut = 1,
}
pub const RKEY: u32 = 0x00c0_ffee;

/// How a command's data buffer is described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One direct descriptor.
    Direct,
    /// An indirect table of `n` descriptors, all inside the IU.
    Indirect(usize),
    /// An indirect table of `n` descriptors of which only `in_iu` are in the
    /// IU; the target must fetch the whole table by RDMA READ.
    External { n: usize, in_iu: usize },
    /// Immediate data inside the IU (data-out only).
    Immediate,
}

/// A parsed SRP_RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub tag: Tag,
    pub req_lim_delta: u32,
    pub flags: u8,
    pub status: u8,
    pub do_res: u32,
    pub di_res: u32,
    pub sense: Vec<u8>,
    pub resp_data: Vec<u8>,
}

impl Response {
    pub fn sense_key_asc(&self) -> Option<(u8, u8, u8)> {
        (self.sense.len() >= 14).then(|| (self.sense[2] & 0xf, self.sense[12], self.sense[13]))
    }
}

/// An IU the target sent that is not an SRP_RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Other {
    CredReq(CredReq),
    TLogout(TLogout),
}

/// A receive ring shared by several simulated channels, as a shared
/// receive queue: one FIFO of posted slots that every channel's incoming
/// IUs take from and every channel's `PostRecv` returns to.
#[derive(Clone)]
pub struct SharedRing {
    pub recv: SharedRecv,
    pub posted: Rc<RefCell<VecDeque<u32>>>,
}

impl SharedRing {
    /// `slots` slots of `slot_size` bytes, all posted.
    pub fn new(slots: u32, slot_size: u32) -> SharedRing {
        let buf = Arc::new(DmaBuf::new(slots as usize * slot_size as usize).unwrap());
        SharedRing {
            recv: SharedRecv {
                buf,
                slot_size,
                slots,
            },
            posted: Rc::new(RefCell::new((0..slots).collect())),
        }
    }

    /// Slots currently posted.
    pub fn posted(&self) -> usize {
        self.posted.borrow().len()
    }

    /// Whether every slot is posted exactly once.
    pub fn all_posted(&self) -> bool {
        let p = self.posted.borrow();
        let mut v: Vec<u32> = p.iter().copied().collect();
        v.sort_unstable();
        v.dedup();
        v.len() == p.len() && p.len() == self.recv.slots as usize
    }
}

/// Bytes of initiator memory a `Sim` has.
const INITIATOR_MEM: usize = 64 << 20;

thread_local! {
    /// Initiator memory of dropped `Sim`s, all zero again, for the next
    /// one: the fuzz targets build a `Sim` per input, and a fresh 64 MiB
    /// mapping costs an mmap, a page fault per page touched and a munmap.
    static SPARE_MEM: RefCell<Vec<DmaBuf>> = const { RefCell::new(Vec::new()) };
}

/// The initiator's memory: zero when a `Sim` gets it, as a fresh mapping
/// is. It remembers the ranges written and zeroes just those when the
/// `Sim` is dropped, then keeps the buffer for the next `Sim`.
struct InitiatorMem {
    buf: Option<DmaBuf>,
    dirty: Vec<(usize, usize)>,
}

impl InitiatorMem {
    fn new() -> InitiatorMem {
        let buf = SPARE_MEM
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| DmaBuf::new(INITIATOR_MEM).unwrap());
        InitiatorMem {
            buf: Some(buf),
            dirty: Vec::new(),
        }
    }

    fn buf(&self) -> &DmaBuf {
        self.buf.as_ref().expect("initiator memory")
    }

    fn write(&mut self, off: usize, data: &[u8]) {
        self.buf().write(off, data);
        self.dirty.push((off, data.len()));
    }
}

impl Drop for InitiatorMem {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        if std::thread::panicking() {
            return;
        }
        for &(off, len) in &self.dirty {
            buf.fill(off, len, 0);
        }
        SPARE_MEM.with(|s| s.borrow_mut().push(buf));
    }
}

thread_local! {
    /// Channel memory of dropped `Sim`s, all zero again.
    static SPARE_CHANNEL_BUFS: RefCell<Vec<DmaBuf>> = const { RefCell::new(Vec::new()) };
}

/// Spare channel buffers kept at most (four per channel).
const MAX_SPARE_CHANNEL_BUFS: usize = 16;

/// A zero buffer of `len` bytes for a channel: a spare one of that size, or
/// a fresh mapping.
pub fn channel_buf(len: usize) -> std::io::Result<DmaBuf> {
    let want = len.max(1).next_multiple_of(srptd::mem::PAGE_SIZE);
    let spare = SPARE_CHANNEL_BUFS.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|b| b.len() == want)?;
        Some(s.swap_remove(i))
    });
    match spare {
        Some(b) => {
            // cargo test (the proptest over this harness) checks that the
            // bookkeeping below missed no write: a spare must be all zero.
            // (Not the fuzz targets: cfg(test) is off there, debug
            // assertions are on.)
            if cfg!(test) {
                static ZERO: [u8; 4096] = [0; 4096];
                let zero = b.with_bytes(0, b.len(), |x| x.chunks(4096).all(|c| c == &ZERO[..c.len()]));
                assert!(zero, "spare channel buffer not zero");
            }
            Ok(b)
        }
        None => DmaBuf::new(len),
    }
}

/// The channel's own buffers (not a shared ring, not the LUNs), kept by the
/// `Sim` to zero and reuse once the channel is gone: a fresh mapping per
/// input costs the fuzz targets an mmap, a fault per page touched and a
/// munmap. Every write into them is recorded: by the simulated hardware
/// (receives, RDMA READs), by executions (data-in) and, for the send ring
/// that the channel itself writes, the whole buffer.
///
/// Made from a `ChannelMemory` of [`channel_buf`]s before the channel is;
/// must be dropped after it (declared before it).
pub struct ChannelBufs {
    bufs: Vec<Arc<DmaBuf>>,
    dirty: Vec<(u64, usize, usize)>,
}

impl ChannelBufs {
    pub fn new(mem: &ChannelMemory) -> ChannelBufs {
        let mut b = ChannelBufs {
            bufs: [
                Some(&mem.send),
                mem.recv.as_ref(),
                Some(&mem.pool),
                Some(&mem.tables),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
            dirty: Vec::new(),
        };
        // The channel writes its IUs there itself.
        b.touch(&mem.send, 0, mem.send.len());
        b
    }

    /// Records a write of `len` bytes at `off` into `buf`.
    pub fn touch(&mut self, buf: &DmaBuf, off: usize, len: usize) {
        self.dirty.push((buf.addr(), off, len));
    }
}

impl Drop for ChannelBufs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for arc in self.bufs.drain(..) {
            // Still shared (the channel outlived its Sim): leave it be.
            let Ok(buf) = Arc::try_unwrap(arc) else { continue };
            for &(_, off, len) in self.dirty.iter().filter(|d| d.0 == buf.addr()) {
                buf.fill(off, len, 0);
            }
            SPARE_CHANNEL_BUFS.with(|s| {
                let mut s = s.borrow_mut();
                // Bounded: the login target's sizes vary per input.
                if s.len() >= MAX_SPARE_CHANNEL_BUFS {
                    s.remove(0);
                }
                s.push(buf);
            });
        }
    }
}

/// The simulated initiator plus its view of the channel.
pub struct Sim {
    pub ch: Channel,
    /// After `ch`: dropped after it, when the buffers are no longer shared.
    chan_bufs: ChannelBufs,
    pub nexus: Arc<Nexus>,
    mem: InitiatorMem,
    /// Next free offset in each arena of `mem` (see [`Arena`]).
    next_va: [u64; 2],
    rams: Vec<Arc<DmaBuf>>,
    /// Posted receive slots: the channel's own, or a shared ring's.
    recv_posted: Rc<RefCell<VecDeque<u32>>>,
    shared: bool,
    sq: VecDeque<WorkRequest>,
    qp_error: bool,
    pub req_lim: i64,
    pub responses: Vec<Response>,
    pub others: Vec<Other>,
    /// When false, `Action::Execute` is held in `held` until `release_exec`.
    pub auto_exec: bool,
    pub held: VecDeque<CmdId>,
    pub disconnect_requested: bool,
    pub closed: bool,
    /// Simulated time, handed to the channel as `now`.
    pub now: Instant,
    /// When true, a drain never sees the receives flushed (as rxe may leave
    /// receives posted during the error transition): only the grace
    /// period ends it.
    pub unflushed_recvs: bool,
    next_tag: u64,
    /// Descriptors of each command, to gather data-in.
    bufs: Vec<(Tag, Vec<DirectDesc>)>,
    /// The largest number of RDMA READs outstanding seen.
    pub max_reads_outstanding: u32,
    reads_outstanding: u32,
    /// Initiator responses (SRP_CRED_RSP) to send after the current pump.
    deliver_later: Vec<Vec<u8>>,
    /// Fault injection: after this many more work requests execute, the
    /// next one fails (as a remote access error or a broken link would).
    pub fail_wr_after: Option<u32>,
    /// The negotiated immediate data offset (68 unless negotiated otherwise).
    pub imm_offset: u16,
    /// File LUNs' reads, writes and flushes go to this io_uring engine, as
    /// the poller runs them (`use_io_uring`); others run inline.
    pub aio: Option<srptd::scsi::AsyncEngine<CmdId>>,
    /// With `aio` or `rbd`: completions are not reaped until this is
    /// false again (an operation stays in flight across pumps).
    pub hold_aio: bool,
    /// RBD LUNs' commands go to this engine, as the poller runs them
    /// (`use_rbd`).
    pub rbd: Option<srptd::scsi::RbdEngine<CmdId>>,
}

pub fn linux_login(it_iu_len: u32) -> LoginRequest {
    LoginRequest {
        tag: Tag(1),
        req_it_iu_len: it_iu_len,
        req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
        req_flags: LoginRequest::IMMED_REQUESTED | LoginRequest::MULTI,
        imm_data_offset: IMM_OFFSET,
        initiator_port_id: INITIATOR,
        target_port_id: TARGET_PORT.to_bytes(),
    }
}

impl Sim {
    /// Logs in with the Linux initiator's parameters and builds a channel.
    pub fn login(target: &Arc<Target>, cfg_edit: impl FnOnce(&mut ChannelConfig)) -> Sim {
        Sim::login_with(target, None, cfg_edit)
    }

    /// Logs in as initiator port `ini` (otherwise the Linux initiator's
    /// parameters) with queue depth `queue_depth`.
    pub fn login_as(target: &Arc<Target>, ini: [u8; 16], queue_depth: u32) -> Sim {
        let mut req = linux_login(8260);
        req.initiator_port_id = ini;
        let limits = LoginLimits {
            queue_depth,
            ..LoginLimits::default()
        };
        Sim::login_req(target, None, &req, &limits, |_| {}).expect("login accepted")
    }

    /// Logs in a channel that receives into `ring` (shared receive queue).
    pub fn login_shared(
        target: &Arc<Target>,
        ring: &SharedRing,
        cfg_edit: impl FnOnce(&mut ChannelConfig),
    ) -> Sim {
        Sim::login_with(target, Some(ring), cfg_edit)
    }

    fn login_with(
        target: &Arc<Target>,
        ring: Option<&SharedRing>,
        cfg_edit: impl FnOnce(&mut ChannelConfig),
    ) -> Sim {
        let limits = LoginLimits {
            queue_depth: 32,
            ..LoginLimits::default()
        };
        Sim::login_req(target, ring, &linux_login(8260), &limits, cfg_edit).expect("login accepted")
    }

    /// Negotiates `req` against `limits` and, when accepted, builds the
    /// channel with the negotiated IU length and immediate data offset.
    pub fn login_req(
        target: &Arc<Target>,
        ring: Option<&SharedRing>,
        req: &LoginRequest,
        limits: &LoginLimits,
        cfg_edit: impl FnOnce(&mut ChannelConfig),
    ) -> Result<Sim, wire::LoginReject> {
        let acc = negotiate(
            req,
            TARGET_PORT,
            limits,
            target.login_allowed(&req.initiator_port_id, None),
            0,
        )?;
        let mut cfg = ChannelConfig::new(acc.it_iu_len, acc.imm_data_offset, limits.queue_depth);
        cfg.pool_size = 4 << 20;
        cfg.max_transfer = target.max_transfer_bytes();
        cfg.shared_recv = ring.map(|r| r.recv.clone());
        cfg_edit(&mut cfg);
        let nexus = target.nexus(req.initiator_port_id);
        let rams = target.luns().into_iter().filter_map(|l| l.dma_buf).collect();
        let mem = ChannelMemory::with(&cfg.memory_layout(), channel_buf).expect("channel memory");
        let chan_bufs = ChannelBufs::new(&mem);
        let ch = Channel::new(cfg, nexus.clone(), mem).expect("channel");
        let mut sim = Sim {
            ch,
            chan_bufs,
            nexus,
            mem: InitiatorMem::new(),
            next_va: [0; 2],
            rams,
            recv_posted: ring.map_or_else(|| Rc::new(RefCell::new(VecDeque::new())), |r| r.posted.clone()),
            shared: ring.is_some(),
            sq: VecDeque::new(),
            qp_error: false,
            req_lim: acc.response.req_lim_delta as i64,
            responses: Vec::new(),
            others: Vec::new(),
            auto_exec: true,
            held: VecDeque::new(),
            disconnect_requested: false,
            now: Instant::now(),
            unflushed_recvs: false,
            closed: false,
            next_tag: 0x1000,
            bufs: Vec::new(),
            max_reads_outstanding: 0,
            reads_outstanding: 0,
            deliver_later: Vec::new(),
            fail_wr_after: None,
            imm_offset: acc.imm_data_offset.unwrap_or(IMM_OFFSET),
            aio: None,
            hold_aio: false,
            rbd: None,
        };
        sim.pump();
        Ok(sim)
    }

    /// The tag the next `new_tag` returns.
    pub fn peek_next_tag(&self) -> Tag {
        Tag(self.next_tag + 1)
    }

    pub fn new_tag(&mut self) -> Tag {
        self.next_tag += 1;
        Tag(self.next_tag)
    }

    /// Allocates `len` bytes of initiator memory in `arena` (with a gap
    /// after it so that pieces are never contiguous by accident).
    pub fn alloc(&mut self, arena: Arena, len: u64) -> u64 {
        let half = (self.mem.buf().len() / 2) as u64;
        let base = arena as u64 * half;
        let next = &mut self.next_va[arena as usize];
        let off = *next;
        *next = (off + len + 4096).next_multiple_of(4096);
        if *next > half {
            *next = 0;
            return self.alloc(arena, len);
        }
        REMOTE_BASE + base + off
    }

    /// The offset of `len` bytes at `va` in initiator memory, if `rkey`
    /// grants the access: data-out buffers and tables are remote-read only,
    /// so a target's RDMA WRITE there fails as a remote access error.
    fn remote_off(&self, va: u64, len: u32, rkey: u32, write: bool) -> Option<usize> {
        if rkey != RKEY || va < REMOTE_BASE {
            return None;
        }
        let off = va - REMOTE_BASE;
        let writable = (self.mem.buf().len() / 2) as u64;
        if write && off.checked_add(len as u64).map_or(true, |end| end > writable) {
            return None;
        }
        self.mem.buf().contains(off, len as u64).then_some(off as usize)
    }

    pub fn write_remote(&mut self, va: u64, data: &[u8]) {
        self.mem.write((va - REMOTE_BASE) as usize, data);
    }

    pub fn read_remote(&self, va: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.buf().read((va - REMOTE_BASE) as usize, &mut v);
        v
    }

    fn region(&self, r: Region) -> &DmaBuf {
        match r {
            Region::Recv => self.ch.recv_buf(),
            Region::Send => self.ch.send_buf(),
            Region::Pool => self.ch.pool_buf(),
            Region::Table => self.ch.table_buf(),
            Region::Ram { base } => self
                .rams
                .iter()
                .find(|b| b.addr() == base)
                .expect("unregistered RAM region"),
        }
    }

    /// Runs the channel and the simulated hardware until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.ch.poll_action() {
                progressed = true;
                match a {
                    Action::PostRecv { slot } => {
                        let mut posted = self.recv_posted.borrow_mut();
                        assert!(!posted.contains(&slot), "receive slot {slot} posted twice");
                        posted.push_back(slot);
                    }
                    Action::PostSend(wr) => self.sq.push_back(wr),
                    Action::Execute { cmd } => {
                        if self.auto_exec {
                            self.exec(cmd);
                        } else {
                            self.held.push_back(cmd);
                        }
                    }
                    Action::Disconnect => {
                        self.disconnect_requested = true;
                        // Like the driver: error the QP, flush, drain.
                        self.qp_error = true;
                        self.sq.clear();
                        // A shared receive queue is not flushed per queue
                        // pair: its slots stay posted for the others.
                        if !self.shared {
                            self.recv_posted.borrow_mut().clear();
                        }
                        self.ch.handle_send_queue_drained(self.now);
                        if !self.unflushed_recvs {
                            self.ch.handle_receives_flushed();
                        }
                    }
                    Action::Closed => self.closed = true,
                }
            }
            // Hardware: execute posted send-queue work in order, then
            // deliver completions.
            let mut completions = Vec::new();
            let outstanding_reads = self.sq.iter().filter(|w| w.opcode == WrOpcode::RdmaRead).count() as u32;
            self.reads_outstanding = outstanding_reads;
            self.max_reads_outstanding = self.max_reads_outstanding.max(outstanding_reads);
            while let Some(wr) = self.sq.pop_front() {
                progressed = true;
                let ok = !self.qp_error && self.execute_wr(&wr);
                if !ok {
                    self.qp_error = true;
                }
                if wr.signaled || !ok {
                    completions.push((wr.wr_id, ok));
                }
            }
            for (id, ok) in completions {
                self.ch.handle_completion(id, ok, 0);
            }
            progressed |= self.reap_aio();
            progressed |= self.reap_rbd();
            if !progressed {
                break;
            }
        }
    }

    fn execute_wr(&mut self, wr: &WorkRequest) -> bool {
        match self.fail_wr_after {
            Some(0) => {
                self.fail_wr_after = None;
                return false;
            }
            Some(n) => self.fail_wr_after = Some(n - 1),
            None => {}
        }
        let local = self.region(wr.local.region);
        let lo = wr.local.offset as usize;
        let len = wr.local.len as usize;
        if !local.contains(wr.local.offset, wr.local.len as u64) {
            panic!("work request outside its local region: {wr:?}");
        }
        match wr.opcode {
            WrOpcode::RdmaRead => {
                let Some(ro) = self.remote_off(wr.remote_addr, wr.local.len, wr.rkey, false) else {
                    return false;
                };
                self.mem.buf().copy_to(ro, local, lo, len);
                let addr = local.addr();
                self.chan_bufs.dirty.push((addr, lo, len));
                true
            }
            WrOpcode::RdmaWrite => {
                let Some(ro) = self.remote_off(wr.remote_addr, wr.local.len, wr.rkey, true) else {
                    return false;
                };
                local.copy_to(lo, self.mem.buf(), ro, len);
                self.mem.dirty.push((ro, len));
                true
            }
            WrOpcode::Send => {
                let mut iu = vec![0u8; len];
                local.read(lo, &mut iu);
                self.on_target_iu(&iu);
                true
            }
        }
    }

    fn on_target_iu(&mut self, iu: &[u8]) {
        match wire::peek_opcode(iu).expect("target IU opcode") {
            Opcode::RSP => {
                let r = Rsp::parse(iu).expect("valid SRP_RSP");
                self.req_lim += r.req_lim_delta as i64;
                self.responses.push(Response {
                    tag: r.tag,
                    req_lim_delta: r.req_lim_delta,
                    flags: r.flags,
                    status: r.status,
                    do_res: r.data_out_res_cnt,
                    di_res: r.data_in_res_cnt,
                    sense: r.sense.to_vec(),
                    resp_data: r.resp_data.to_vec(),
                });
            }
            Opcode::CRED_REQ => {
                let c = CredReq::parse(iu).expect("valid SRP_CRED_REQ");
                self.req_lim += c.req_lim_delta as i64;
                self.others.push(Other::CredReq(c));
                let mut b = [0u8; 16];
                CredRsp { tag: c.tag }.emit(&mut b).unwrap();
                // An initiator response uses no credit (SRP r16a 5.6).
                self.deliver_later.push(b.to_vec());
            }
            Opcode::T_LOGOUT => self
                .others
                .push(Other::TLogout(TLogout::parse(iu).expect("valid SRP_T_LOGOUT"))),
            op => panic!("unexpected IU from target: {op:?}"),
        }
    }

    /// Runs file I/O on a new io_uring engine from now on; false where
    /// io_uring is unavailable.
    pub fn use_io_uring(&mut self) -> bool {
        match srptd::scsi::AsyncEngine::new(64) {
            Ok(mut e) => {
                // As the poller does: reads and writes into the channel's
                // buffers are READ_FIXED/WRITE_FIXED where the kernel can.
                e.register_buffer(self.ch.pool_buf());
                e.register_buffer(self.ch.recv_buf());
                self.aio = Some(e);
                true
            }
            Err(e) => {
                eprintln!("io_uring unavailable ({e})");
                false
            }
        }
    }

    /// Submits the engine's queued operations and, unless `hold_aio`,
    /// waits for and hands over every completion. Returns whether any
    /// command finished.
    pub fn reap_aio(&mut self) -> bool {
        let Some(aio) = self.aio.as_mut() else {
            return false;
        };
        aio.submit().expect("io_uring submit");
        if self.hold_aio || aio.in_flight() == 0 {
            return false;
        }
        aio.wait().expect("io_uring wait");
        let mut done = Vec::new();
        aio.reap(&mut done);
        for (cmd, c) in done.iter() {
            self.ch.handle_exec_done(*cmd, c.clone());
        }
        !done.is_empty()
    }

    /// Runs RBD LUNs' commands on an engine from now on.
    pub fn use_rbd(&mut self) {
        self.rbd = Some(srptd::scsi::RbdEngine::new(64).expect("RBD engine"));
    }

    /// Waits for the RBD engine's operations in flight and hands over the
    /// commands that finished. Returns whether any did.
    pub fn reap_rbd(&mut self) -> bool {
        let Some(rbd) = self.rbd.as_mut().filter(|_| !self.hold_aio) else {
            return false;
        };
        let mut done = Vec::new();
        let start = std::time::Instant::now();
        while done.is_empty() && rbd.in_flight() > 0 {
            assert!(start.elapsed().as_secs() < 60, "RBD operations hang");
            rbd.wait(std::time::Duration::from_millis(100)).expect("wait");
            rbd.clear_event();
            rbd.reap(&mut done);
        }
        for (cmd, c) in done.iter() {
            self.ch.handle_exec_done(*cmd, c.clone());
        }
        !done.is_empty()
    }

    /// Runs a held SCSI command now.
    pub fn exec(&mut self, cmd: CmdId) {
        let done = {
            let r = self
                .ch
                .exec_request(cmd)
                .expect("exec request for a held command");
            self.chan_bufs.touch(r.buf, r.offset, r.len as usize);
            use srptd::scsi::Started;
            let mut started = Started::Blocking;
            if r.nexus.runs_blocking(r.command) {
                if let Some(aio) = self.aio.as_mut() {
                    started = aio.start(cmd, r.nexus, r.command, r.buf, r.offset, r.len);
                }
                if let (Started::Blocking, Some(rbd)) = (&started, self.rbd.as_mut()) {
                    started = rbd.start(cmd, r.nexus, r.command, r.buf, r.offset, r.len);
                }
            }
            match started {
                Started::Submitted => return,
                Started::Done(c) => c,
                Started::Blocking => r.nexus.run(r.command, r.buf, r.offset, r.len),
            }
        };
        self.ch.handle_exec_done(cmd, done);
    }

    /// Receive slots posted that an incoming IU can land in.
    pub fn recv_available(&self) -> usize {
        self.recv_posted.borrow().len()
    }

    /// Releases the `i`-th held command (modulo the number held) and pumps.
    pub fn release_nth(&mut self, i: usize) {
        if self.held.is_empty() {
            return;
        }
        let cmd = self.held.remove(i % self.held.len()).expect("in range");
        self.exec(cmd);
        self.pump();
    }

    /// Releases the oldest held command and pumps.
    pub fn release_exec(&mut self) {
        let cmd = self.held.pop_front().expect("a held command");
        self.exec(cmd);
        self.pump();
    }

    /// Lands raw IU bytes in the next posted receive slot. Panics if none is
    /// posted (on real hardware: receiver-not-ready).
    pub fn send_raw(&mut self, iu: &[u8]) {
        let slot = self
            .recv_posted
            .borrow_mut()
            .pop_front()
            .expect("RNR: the target has no receive posted");
        let (off, size) = self.ch.recv_slot(slot);
        assert!(iu.len() <= size as usize, "IU larger than the receive slot");
        self.ch.recv_buf().write(off as usize, iu);
        self.chan_bufs.touch(self.ch.recv_buf(), off as usize, iu.len());
        self.ch.handle_completion(WrId::recv(slot), true, iu.len() as u32);
        self.pump();
        for iu in std::mem::take(&mut self.deliver_later) {
            self.send_raw(&iu);
        }
    }

    /// Sends a request IU, spending a credit as the initiator does.
    pub fn send_request(&mut self, iu: &[u8]) {
        self.req_lim -= 1;
        self.send_raw(iu);
    }

    /// Builds the descriptor for a buffer of `len` bytes holding `data` (for
    /// data-out), returning the IU bytes and the descriptors.
    pub fn build_cmd(
        &mut self,
        tag: Tag,
        lun: u16,
        cdb: &[u8],
        out: Option<&[u8]>,
        in_len: u32,
        layout: Layout,
    ) -> Vec<u8> {
        let lun8 = lun_bytes(lun);
        let len = out.map_or(in_len, |d| d.len() as u32);
        if layout == Layout::Immediate {
            let mut iu = vec![0u8; len as usize + self.imm_offset as usize + 1024];
            let data = out.expect("immediate data is data-out");
            let cmd = Cmd::new(tag, lun8, cdb)
                .with_data_out(DataDesc::Immediate(ImmediateDesc { len, desc_end: 0 }));
            let n = cmd
                .emit_with_immediate(&mut iu, self.imm_offset as usize, data)
                .expect("emit immediate");
            iu.truncate(n);
            self.bufs.push((tag, Vec::new()));
            return iu;
        }
        let pieces = match layout {
            Layout::Direct => 1,
            Layout::Indirect(n) | Layout::External { n, .. } => n,
            Layout::Immediate => unreachable!(),
        };
        let arena = if out.is_some() {
            Arena::DataOut
        } else {
            Arena::DataIn
        };
        let descs = self.split(arena, len, pieces);
        if let Some(d) = out {
            let mut at = 0usize;
            for dd in &descs {
                self.write_remote(dd.va, &d[at..at + dd.len as usize]);
                at += dd.len as usize;
            }
        }
        let mut table = Vec::with_capacity(descs.len() * 16);
        for d in &descs {
            let mut b = [0u8; 16];
            d.emit(&mut b).unwrap();
            table.extend_from_slice(&b);
        }
        let desc = match layout {
            Layout::Direct => DataDesc::Direct(descs[0]),
            Layout::Indirect(_) => DataDesc::Indirect(IndirectDesc {
                table: DirectDesc {
                    va: 0,
                    rkey: 0,
                    len: table.len() as u32,
                },
                total_len: len,
                partial: &table,
            }),
            Layout::External { in_iu, .. } => {
                let va = self.alloc(Arena::DataOut, table.len() as u64);
                self.write_remote(va, &table);
                DataDesc::Indirect(IndirectDesc {
                    table: DirectDesc {
                        va,
                        rkey: RKEY,
                        len: table.len() as u32,
                    },
                    total_len: len,
                    partial: &table[..in_iu * 16],
                })
            }
            Layout::Immediate => unreachable!(),
        };
        let mut cmd = Cmd::new(tag, lun8, cdb);
        cmd = if out.is_some() {
            cmd.with_data_out(desc)
        } else {
            cmd.with_data_in(desc)
        };
        let mut iu = vec![0u8; cmd.emitted_len()];
        let n = cmd.emit(&mut iu).expect("emit SRP_CMD");
        iu.truncate(n);
        self.bufs.push((tag, descs));
        iu
    }

    /// Splits a buffer of `len` bytes into `pieces` separate descriptors.
    fn split(&mut self, arena: Arena, len: u32, pieces: usize) -> Vec<DirectDesc> {
        let pieces = pieces.max(1);
        let base = len / pieces as u32;
        let mut v = Vec::with_capacity(pieces);
        for i in 0..pieces {
            let l = if i == pieces - 1 {
                len - base * (pieces as u32 - 1)
            } else {
                base
            };
            let va = self.alloc(arena, l as u64);
            v.push(DirectDesc {
                va,
                rkey: RKEY,
                len: l,
            });
        }
        v
    }

    /// Bytes the target wrote into the buffer of command `tag`.
    pub fn data_in(&self, tag: Tag, len: usize) -> Vec<u8> {
        let descs = &self
            .bufs
            .iter()
            .rev()
            .find(|(t, _)| *t == tag)
            .expect("known tag")
            .1;
        let mut v = Vec::with_capacity(len);
        for d in descs {
            let take = (d.len as usize).min(len - v.len());
            v.extend(self.read_remote(d.va, take));
            if v.len() == len {
                break;
            }
        }
        v
    }

    pub fn take_response(&mut self, tag: Tag) -> Response {
        let i = self
            .responses
            .iter()
            .position(|r| r.tag == tag)
            .unwrap_or_else(|| panic!("no response for {tag:?}"));
        self.responses.remove(i)
    }

    pub fn has_response(&self, tag: Tag) -> bool {
        self.responses.iter().any(|r| r.tag == tag)
    }

    /// Sends a SCSI command and returns its tag (response not awaited).
    pub fn submit(&mut self, lun: u16, cdb: &[u8], out: Option<&[u8]>, in_len: u32, layout: Layout) -> Tag {
        let tag = self.new_tag();
        let iu = self.build_cmd(tag, lun, cdb, out, in_len, layout);
        self.send_request(&iu);
        tag
    }

    /// Runs one SCSI command to completion.
    pub fn command(
        &mut self,
        lun: u16,
        cdb: &[u8],
        out: Option<&[u8]>,
        in_len: u32,
        layout: Layout,
    ) -> (Response, Vec<u8>) {
        let tag = self.submit(lun, cdb, out, in_len, layout);
        let r = self.take_response(tag);
        let data = self.data_in(
            tag,
            in_len.saturating_sub(if r.flags & Rsp::DIUNDER != 0 { r.di_res } else { 0 }) as usize,
        );
        (r, data)
    }

    pub fn write(&mut self, lun: u16, lba: u64, data: &[u8], block: u32, layout: Layout) -> Response {
        let cdb = rw16(0x8a, lba, data.len() as u32 / block);
        self.command(lun, &cdb, Some(data), 0, layout).0
    }

    pub fn read(&mut self, lun: u16, lba: u64, len: u32, block: u32, layout: Layout) -> (Response, Vec<u8>) {
        let cdb = rw16(0x88, lba, len / block);
        self.command(lun, &cdb, None, len, layout)
    }

    pub fn task_mgmt(&mut self, lun: u16, func: TmFunction, task_tag: Tag) -> Tag {
        let tag = self.new_tag();
        let mut b = [0u8; 48];
        TaskMgmt {
            tag,
            sol_not: 0,
            lun: lun_bytes(lun),
            function: func,
            task_tag,
        }
        .emit(&mut b)
        .unwrap();
        self.send_request(&b);
        tag
    }

    pub fn logout(&mut self) {
        let mut b = [0u8; 16];
        ILogout { tag: self.new_tag() }.emit(&mut b).unwrap();
        self.send_request(&b);
    }

    /// Advances simulated time by `d` and lets the channel act on it.
    pub fn advance(&mut self, d: std::time::Duration) {
        self.now += d;
        let now = self.now;
        self.ch.handle_timeout(now);
        self.pump();
    }

    /// Sends every held command to completion.
    pub fn release_all(&mut self) {
        while !self.held.is_empty() {
            self.release_exec();
        }
    }
}

/// The 8-byte SAM LUN the Linux initiator sends for `lun`.
pub fn lun_bytes(lun: u16) -> [u8; 8] {
    srptd::scsi::lun::encode_lun(lun)
}

/// READ(16)/WRITE(16) CDB.
pub fn rw16(op: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// WRITE SAME(16) CDB; `flags` is byte 1 (0x08 UNMAP, 0x01 NDOB).
pub fn write_same16(lba: u64, blocks: u32, flags: u8) -> [u8; 16] {
    let mut c = rw16(0x93, lba, blocks);
    c[1] = flags;
    c
}

/// An UNMAP parameter list (SBC-3 5.28.2) of `(lba, blocks)` descriptors.
pub fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut p = vec![0u8; 8 + 16 * ranges.len()];
    let n = p.len() - 2;
    p[0..2].copy_from_slice(&(n as u16).to_be_bytes());
    p[2..4].copy_from_slice(&((16 * ranges.len()) as u16).to_be_bytes());
    for (i, (lba, n)) in ranges.iter().enumerate() {
        p[8 + 16 * i..16 + 16 * i].copy_from_slice(&lba.to_be_bytes());
        p[16 + 16 * i..20 + 16 * i].copy_from_slice(&n.to_be_bytes());
    }
    p
}

/// READ(10)/WRITE(10) CDB.
pub fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// Deterministic test pattern, cheaper than [`pattern`] (a step of the
/// generator gives 8 bytes, not 1) for the fuzz targets, which write up to
/// 64 KiB per command.
pub fn pattern_fast(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; len];
    let mut words = v.chunks_exact_mut(8);
    let mut step = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    };
    for w in &mut words {
        // An 8-byte store, not a memcpy call per word.
        *<&mut [u8; 8]>::try_from(w).expect("8 bytes") = step();
    }
    let tail = words.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&step()[..n]);
    v
}

/// Deterministic test pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A target with one LUN 0 built from a backstore spec such as `ram:16M,bs=512`.
pub fn target_with(spec: &str) -> Arc<Target> {
    let bs = BackstoreConfig::parse(spec, "lun").expect("backstore spec");
    Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        ..TargetConfig::default()
    })
    .expect("target")
}
