//! RDMA/CM: event channels, connection identifiers, connection setup with
//! our own queue pairs.
//!
//! Passive side (the target), as ib_srpt does it:
//! 1. [`EventChannel::new`], [`CmId::new`], [`CmId::bind_addr`],
//!    [`CmId::listen`].
//! 2. [`EventChannel::get_event`] gives [`CmEventKind::ConnectRequest`] with
//!    the new id in [`CmEvent::new_id`] and the login private data.
//! 3. On `new_id.verbs_context()` create PD, CQs and a [`QueuePair`]; take
//!    it INIT → RTR → RTS with [`CmId::init_qp_attr`] +
//!    [`QueuePair::modify`] (or [`CmId::ready_qp`]).
//! 4. [`CmId::accept`] with `qp_num` set, or [`CmId::reject`].
//! 5. `Established` ... `Disconnected`: [`CmId::disconnect`], drop.
//!
//! Active side (tests): `resolve_addr` → `AddrResolved`, `resolve_route` →
//! `RouteResolved`, create the QP and take it to INIT, `connect`; on
//! `ConnectResponse` take it INIT → RTR → RTS and call `establish`.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdma_sys as sys;

use super::device::{Context, Gid, LinkLayer};
use super::qp::{QpAttr, QpState, QueuePair};
use super::{check, set_nonblocking, Error, Ptr, Result};

/// An RDMA/CM event channel: a non-blocking fd that becomes readable when
/// an event for one of its ids is pending.
pub struct EventChannel {
    ch: NonNull<sys::rdma_event_channel>,
}

// SAFETY: librdmacm event channels may be read from any thread.
unsafe impl Send for EventChannel {}
// SAFETY: as above; rdma_get_cm_event serialises internally.
unsafe impl Sync for EventChannel {}

impl fmt::Debug for EventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannel")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl EventChannel {
    /// Creates a channel in non-blocking mode.
    pub fn new() -> Result<Arc<EventChannel>> {
        // SAFETY: no arguments.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let ch = NonNull::new(ch).ok_or_else(|| Error::last("rdma_create_event_channel"))?;
        let ch = EventChannel { ch };
        set_nonblocking(ch.as_raw_fd(), "fcntl(rdma_event_channel)")?;
        Ok(Arc::new(ch))
    }

    /// Like [`get_event`](Self::get_event), but waits up to `timeout` for
    /// an event (blocking-style programs and tests; the daemon uses
    /// [`to_async`](Self::to_async)). `None` on timeout.
    pub fn wait_event(self: &Arc<Self>, timeout: Duration) -> Result<Option<CmEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(ev) = self.get_event()? {
                return Ok(Some(ev));
            }
            if !super::wait_readable_until(self.as_fd(), deadline, "poll(rdma_event_channel)")? {
                return Ok(None);
            }
        }
    }

    /// Reads one event, copies it out and acknowledges it; `None` if none is
    /// pending.
    pub fn get_event(self: &Arc<Self>) -> Result<Option<CmEvent>> {
        let mut ev: *mut sys::rdma_cm_event = std::ptr::null_mut();
        // SAFETY: valid channel, out-pointer on the stack.
        let rc = unsafe { sys::rdma_get_cm_event(self.ch.as_ptr(), &mut ev) };
        if rc != 0 {
            let e = Error::last("rdma_get_cm_event");
            return if e.is_would_block() { Ok(None) } else { Err(e) };
        }
        // SAFETY: a returned event is valid until acknowledged below.
        let out = unsafe { CmEvent::copy_from(&*ev, self) };
        // SAFETY: acknowledged once; nothing points into it afterwards.
        let rc = unsafe { sys::rdma_ack_cm_event(ev) };
        if let Err(e) = check("rdma_ack_cm_event", rc) {
            tracing::error!("{e}");
        }
        Ok(Some(out))
    }
}

impl AsRawFd for EventChannel {
    fn as_raw_fd(&self) -> RawFd {
        // SAFETY: field read of a valid channel.
        unsafe { (*self.ch.as_ptr()).fd }
    }
}

impl AsFd for EventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd lives as long as the channel.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once; every id on it holds an Arc
        // of it, so all are destroyed.
        unsafe { sys::rdma_destroy_event_channel(self.ch.as_ptr()) }
    }
}

/// The owned `rdma_cm_id`; destroyed when the last [`CmId`] or [`Context`]
/// derived from it goes.
pub(crate) struct CmIdInner {
    id: NonNull<sys::rdma_cm_id>,
    channel: Arc<EventChannel>,
}

// SAFETY: the only operation through a shared CmIdInner is Drop; calls on
// the id go through CmId, which is not Sync.
unsafe impl Send for CmIdInner {}
// SAFETY: as above.
unsafe impl Sync for CmIdInner {}

impl Drop for CmIdInner {
    fn drop(&mut self) {
        // SAFETY: owned id, destroyed once. Its events are all acknowledged
        // (get_event acks before returning), so this does not block. QPs we
        // created are not attached to the id (id->qp is null).
        let rc = unsafe { sys::rdma_destroy_id(self.id.as_ptr()) };
        if let Err(e) = check("rdma_destroy_id", rc) {
            tracing::error!("{e}");
        }
        let _ = &self.channel;
    }
}

/// Identifies a CM id in events ([`CmEvent::id`]): compare with
/// [`CmId::handle`]. Only a number; it gives no access to the id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CmIdHandle(usize);

impl fmt::Debug for CmIdHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CmIdHandle({:#x})", self.0)
    }
}

/// RDMA/CM port spaces srptd uses (both reliable connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpace {
    /// `RDMA_PS_TCP`: IPv4/IPv6 addresses; connection requests carry the
    /// RDMA/CM header before the private data.
    Tcp,
    /// `RDMA_PS_IB`: native InfiniBand (`AF_IB`) addresses; the private data
    /// of a request arrives whole (no RDMA/CM header), as an IB CM client
    /// such as ib_srp's IB CM login sends it.
    Ib,
}

impl PortSpace {
    fn to_sys(self) -> sys::rdma_port_space::Type {
        match self {
            PortSpace::Tcp => sys::rdma_port_space::RDMA_PS_TCP,
            PortSpace::Ib => sys::rdma_port_space::RDMA_PS_IB,
        }
    }
}

/// `AF_IB` (`<infiniband/ib.h>`; not in libc).
pub const AF_IB: u16 = 27;

/// A native InfiniBand address (`struct sockaddr_ib`) for the IB port
/// space: a port GID (zero: any), P_Key, and the IB CM service ID to listen
/// on (with a mask of the bits that must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IbAddr {
    /// Port GID; all zeros for any device.
    pub gid: Gid,
    /// Partition key (0xffff: the default full-member partition).
    pub pkey: u16,
    /// IB CM service ID.
    pub service_id: u64,
    /// Bits of `service_id` that must match (all ones: exactly this ID).
    pub service_id_mask: u64,
}

/// `struct sockaddr_ib` from `<infiniband/ib.h>` (not in rdma-sys); the
/// layout is checked against the header in the ABI test.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SockaddrIb {
    pub(crate) sib_family: u16,
    /// Network order.
    pub(crate) sib_pkey: u16,
    /// Network order.
    pub(crate) sib_flowinfo: u32,
    /// 16 bytes, 8-byte aligned (`struct ib_addr` is a union with `__be64`).
    pub(crate) sib_addr: [u64; 2],
    /// Network order.
    pub(crate) sib_sid: u64,
    /// Network order.
    pub(crate) sib_sid_mask: u64,
    pub(crate) sib_scope_id: u64,
}

impl IbAddr {
    pub(crate) fn to_sys(self) -> SockaddrIb {
        let g = self.gid.0;
        SockaddrIb {
            sib_family: AF_IB,
            sib_pkey: self.pkey.to_be(),
            sib_flowinfo: 0,
            // The GID bytes as they are (already network order).
            sib_addr: [
                u64::from_ne_bytes(g[..8].try_into().unwrap_or_default()),
                u64::from_ne_bytes(g[8..].try_into().unwrap_or_default()),
            ],
            sib_sid: self.service_id.to_be(),
            sib_sid_mask: self.service_id_mask.to_be(),
            sib_scope_id: 0,
        }
    }
}

/// An RDMA/CM connection identifier (reliable connections) in the TCP port
/// space, or the IB port space ([`CmId::with_port_space`]). `Send` but not
/// `Sync`.
pub struct CmId {
    inner: Arc<CmIdInner>,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for CmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmId")
            .field("id", &Ptr(self.inner.id.as_ptr() as usize))
            .field("port_num", &self.port_num())
            .finish()
    }
}

/// Connection parameters sent with connect/accept.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnParam<'a> {
    /// Private data (at most 56 bytes for connect, 196 for accept).
    pub private_data: &'a [u8],
    /// RDMA READs the peer may have outstanding against us.
    pub responder_resources: u8,
    /// RDMA READs we will have outstanding against the peer.
    pub initiator_depth: u8,
    /// Hardware flow control (0/1).
    pub flow_control: u8,
    /// Transport retries (connect only).
    pub retry_count: u8,
    /// RNR retries (7 = infinite).
    pub rnr_retry_count: u8,
    /// Whether our QP uses an SRQ.
    pub srq: bool,
    /// Our QP number.
    pub qp_num: u32,
}

impl ConnParam<'_> {
    fn to_sys(self) -> Result<sys::rdma_conn_param> {
        let len =
            u8::try_from(self.private_data.len()).map_err(|_| Error::Invalid("private data too long"))?;
        Ok(sys::rdma_conn_param {
            private_data: if len == 0 {
                std::ptr::null()
            } else {
                self.private_data.as_ptr().cast()
            },
            private_data_len: len,
            responder_resources: self.responder_resources,
            initiator_depth: self.initiator_depth,
            flow_control: self.flow_control,
            retry_count: self.retry_count,
            rnr_retry_count: self.rnr_retry_count,
            srq: self.srq as u8,
            qp_num: self.qp_num,
        })
    }
}

/// Connection parameters received with an event (copied).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceivedConnParam {
    /// Private data; RDMA/CM over IB CM pads it (56 bytes in a REQ).
    pub private_data: Vec<u8>,
    /// Peer's responder resources.
    pub responder_resources: u8,
    /// Peer's initiator depth.
    pub initiator_depth: u8,
    /// Flow control.
    pub flow_control: u8,
    /// Retry count.
    pub retry_count: u8,
    /// RNR retry count.
    pub rnr_retry_count: u8,
    /// Whether the peer uses an SRQ.
    pub srq: bool,
    /// Peer's QP number.
    pub qp_num: u32,
}

/// Kind of RDMA/CM event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmEventKind {
    AddrResolved,
    AddrError,
    RouteResolved,
    RouteError,
    ConnectRequest,
    ConnectResponse,
    ConnectError,
    Unreachable,
    Rejected,
    Established,
    Disconnected,
    DeviceRemoval,
    MulticastJoin,
    MulticastError,
    AddrChange,
    TimewaitExit,
    Other(u32),
}

impl CmEventKind {
    fn from_raw(v: u32) -> CmEventKind {
        use sys::rdma_cm_event_type::*;
        match v {
            RDMA_CM_EVENT_ADDR_RESOLVED => CmEventKind::AddrResolved,
            RDMA_CM_EVENT_ADDR_ERROR => CmEventKind::AddrError,
            RDMA_CM_EVENT_ROUTE_RESOLVED => CmEventKind::RouteResolved,
            RDMA_CM_EVENT_ROUTE_ERROR => CmEventKind::RouteError,
            RDMA_CM_EVENT_CONNECT_REQUEST => CmEventKind::ConnectRequest,
            RDMA_CM_EVENT_CONNECT_RESPONSE => CmEventKind::ConnectResponse,
            RDMA_CM_EVENT_CONNECT_ERROR => CmEventKind::ConnectError,
            RDMA_CM_EVENT_UNREACHABLE => CmEventKind::Unreachable,
            RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established,
            RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
            RDMA_CM_EVENT_MULTICAST_JOIN => CmEventKind::MulticastJoin,
            RDMA_CM_EVENT_MULTICAST_ERROR => CmEventKind::MulticastError,
            RDMA_CM_EVENT_ADDR_CHANGE => CmEventKind::AddrChange,
            RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            v => CmEventKind::Other(v),
        }
    }

    fn has_conn_param(self) -> bool {
        matches!(
            self,
            CmEventKind::ConnectRequest
                | CmEventKind::ConnectResponse
                | CmEventKind::Established
                | CmEventKind::Rejected
        )
    }
}

/// An RDMA/CM event, copied out of `rdma_cm_event` and already
/// acknowledged.
#[derive(Debug)]
pub struct CmEvent {
    /// What happened.
    pub kind: CmEventKind,
    /// Status: 0, a negative errno, or for `Rejected` the IB CM reject
    /// reason.
    pub status: i32,
    /// The id the event is for (for `ConnectRequest`: the new id).
    pub id: CmIdHandle,
    /// For `ConnectRequest`: the listening id.
    pub listen_id: Option<CmIdHandle>,
    /// For `ConnectRequest`: the new connection's id, owned by the caller
    /// (accept, reject, or drop to refuse).
    pub new_id: Option<CmId>,
    /// Connection parameters and private data (connect request/response,
    /// established, rejected).
    pub conn: Option<ReceivedConnParam>,
}

impl CmEvent {
    /// # Safety
    /// `ev` must be a valid, not yet acknowledged event from `channel`.
    unsafe fn copy_from(ev: &sys::rdma_cm_event, channel: &Arc<EventChannel>) -> CmEvent {
        let kind = CmEventKind::from_raw(ev.event);
        let conn = kind.has_conn_param().then(|| {
            // SAFETY: TCP port space events carry the conn member.
            let c = unsafe { ev.param.conn };
            let private_data = if c.private_data.is_null() || c.private_data_len == 0 {
                Vec::new()
            } else {
                // SAFETY: librdmacm guarantees private_data_len readable
                // bytes until the event is acknowledged.
                unsafe {
                    std::slice::from_raw_parts(c.private_data.cast::<u8>(), c.private_data_len as usize)
                }
                .to_vec()
            };
            ReceivedConnParam {
                private_data,
                responder_resources: c.responder_resources,
                initiator_depth: c.initiator_depth,
                flow_control: c.flow_control,
                retry_count: c.retry_count,
                rnr_retry_count: c.rnr_retry_count,
                srq: c.srq != 0,
                qp_num: c.qp_num,
            }
        });
        let new_id = match (kind, NonNull::new(ev.id)) {
            (CmEventKind::ConnectRequest, Some(id)) => Some(CmId::from_owned(id, channel.clone())),
            _ => None,
        };
        CmEvent {
            kind,
            status: ev.status,
            id: CmIdHandle(ev.id as usize),
            listen_id: (!ev.listen_id.is_null()).then_some(CmIdHandle(ev.listen_id as usize)),
            new_id,
            conn,
        }
    }

    /// The private data, or an empty slice.
    pub fn private_data(&self) -> &[u8] {
        self.conn.as_ref().map_or(&[], |c| &c.private_data)
    }
}

impl CmId {
    /// Creates an id on `channel` in the TCP port space (RC).
    pub fn new(channel: &Arc<EventChannel>) -> Result<CmId> {
        CmId::with_port_space(channel, PortSpace::Tcp)
    }

    /// Creates an id on `channel` in port space `ps` (RC).
    pub fn with_port_space(channel: &Arc<EventChannel>, ps: PortSpace) -> Result<CmId> {
        let mut id: *mut sys::rdma_cm_id = std::ptr::null_mut();
        // SAFETY: valid channel; out-pointer on the stack.
        let rc =
            unsafe { sys::rdma_create_id(channel.ch.as_ptr(), &mut id, std::ptr::null_mut(), ps.to_sys()) };
        check("rdma_create_id", rc)?;
        let id = NonNull::new(id).ok_or_else(|| Error::errno("rdma_create_id", libc::EIO))?;
        Ok(CmId::from_owned(id, channel.clone()))
    }

    fn from_owned(id: NonNull<sys::rdma_cm_id>, channel: Arc<EventChannel>) -> CmId {
        CmId {
            inner: Arc::new(CmIdInner { id, channel }),
            _not_sync: PhantomData,
        }
    }

    fn ptr(&self) -> *mut sys::rdma_cm_id {
        self.inner.id.as_ptr()
    }

    /// The handle events carry for this id.
    pub fn handle(&self) -> CmIdHandle {
        CmIdHandle(self.ptr() as usize)
    }

    /// The event channel.
    pub fn channel(&self) -> &Arc<EventChannel> {
        &self.inner.channel
    }

    /// Binds to a local address (IPv4 or IPv6; port 0 picks one).
    pub fn bind_addr(&self, addr: SocketAddr) -> Result<()> {
        let (mut ss, _) = to_sockaddr(addr);
        // SAFETY: valid id; ss is a sockaddr_in/in6 in a storage buffer.
        check("rdma_bind_addr", unsafe {
            sys::rdma_bind_addr(self.ptr(), (&mut ss as *mut libc::sockaddr_storage).cast())
        })
    }

    /// Binds an id of the IB port space to a native InfiniBand address
    /// (`AF_IB`): a port GID and the service ID to listen on.
    pub fn bind_ib(&self, addr: &IbAddr) -> Result<()> {
        let mut sib = addr.to_sys();
        // SAFETY: valid id; librdmacm reads a `sockaddr_ib` (it sizes the
        // address by its family) that lives on the stack for the call.
        check("rdma_bind_addr", unsafe {
            sys::rdma_bind_addr(self.ptr(), (&mut sib as *mut SockaddrIb).cast())
        })
    }

    /// Listens for connection requests.
    pub fn listen(&self, backlog: i32) -> Result<()> {
        // SAFETY: valid id.
        check("rdma_listen", unsafe { sys::rdma_listen(self.ptr(), backlog) })
    }

    /// Starts resolving `dst` (→ `AddrResolved` / `AddrError`).
    pub fn resolve_addr(&self, src: Option<SocketAddr>, dst: SocketAddr, timeout: Duration) -> Result<()> {
        let mut s = src.map(|a| to_sockaddr(a).0);
        let (mut d, _) = to_sockaddr(dst);
        let sp = s.as_mut().map_or(std::ptr::null_mut(), |s| {
            (s as *mut libc::sockaddr_storage).cast()
        });
        // SAFETY: valid id and sockaddrs on the stack (copied by the call).
        let rc = unsafe {
            sys::rdma_resolve_addr(
                self.ptr(),
                sp,
                (&mut d as *mut libc::sockaddr_storage).cast(),
                ms(timeout),
            )
        };
        check("rdma_resolve_addr", rc)
    }

    /// Starts resolving the route (→ `RouteResolved` / `RouteError`).
    pub fn resolve_route(&self, timeout: Duration) -> Result<()> {
        // SAFETY: valid id.
        check("rdma_resolve_route", unsafe {
            sys::rdma_resolve_route(self.ptr(), ms(timeout))
        })
    }

    /// Sends a connection request for our QP `param.qp_num` (in INIT).
    pub fn connect(&self, param: &ConnParam<'_>) -> Result<()> {
        let mut p = param.to_sys()?;
        // SAFETY: valid id; p and its private data live for the call.
        check("rdma_connect", unsafe { sys::rdma_connect(self.ptr(), &mut p) })
    }

    /// Accepts a connection request with our QP `param.qp_num` (already
    /// in RTR or RTS).
    pub fn accept(&self, param: &ConnParam<'_>) -> Result<()> {
        if param.qp_num == 0 {
            return Err(Error::Invalid("accept needs our qp_num"));
        }
        let mut p = param.to_sys()?;
        // SAFETY: as in connect.
        check("rdma_accept", unsafe { sys::rdma_accept(self.ptr(), &mut p) })
    }

    /// Active side with our own QP: after `ConnectResponse` and moving the
    /// QP to RTS, completes the connection (sends RTU).
    pub fn establish(&self) -> Result<()> {
        // SAFETY: valid id.
        check("rdma_establish", unsafe { sys::rdma_establish(self.ptr()) })
    }

    /// Rejects a connection request with private data (at most 148 bytes).
    pub fn reject(&self, private_data: &[u8]) -> Result<()> {
        let len = u8::try_from(private_data.len()).map_err(|_| Error::Invalid("private data too long"))?;
        let p = if len == 0 {
            std::ptr::null()
        } else {
            private_data.as_ptr().cast()
        };
        // SAFETY: valid id; the data is read during the call.
        check("rdma_reject", unsafe { sys::rdma_reject(self.ptr(), p, len) })
    }

    /// Disconnects (→ `Disconnected` on both sides). Does not touch our QP:
    /// move it to error yourself to flush outstanding work.
    pub fn disconnect(&self) -> Result<()> {
        // SAFETY: valid id.
        check("rdma_disconnect", unsafe { sys::rdma_disconnect(self.ptr()) })
    }

    /// Attributes for moving a QP of this connection to `state`, from
    /// `rdma_init_qp_attr` (path, QPNs, PSNs, MTU, rd_atomic, timers).
    pub fn init_qp_attr(&self, state: QpState) -> Result<QpAttr> {
        let mut attr = QpAttr::new(state);
        let mut mask = 0i32;
        // SAFETY: valid id; attr.qp_state is the input, the rest output.
        let rc = unsafe { sys::rdma_init_qp_attr(self.ptr(), &mut attr.attr, &mut mask) };
        check("rdma_init_qp_attr", rc)?;
        attr.mask = mask as u32;
        if state == QpState::Rtr {
            // As librdmacm's ucma_modify_qp_rtr: old rdma_ucm kernels set
            // RoCE-only mask bits 21-23 on InfiniBand; mask them off there.
            if let Ok(ctx) = self.verbs_context() {
                if let Ok(p) = ctx.query_port(self.port_num()) {
                    if matches!(p.link_layer, LinkLayer::InfiniBand) {
                        attr.mask &= !0x00e0_0000;
                    }
                }
            }
        }
        Ok(attr)
    }

    /// Takes `qp` through INIT → RTR → RTS with attributes from
    /// [`init_qp_attr`](Self::init_qp_attr), as librdmacm does for QPs it
    /// owns (INIT is re-applied once the IB CM id exists so the access
    /// flags follow the negotiated responder resources).
    /// `responder_resources` overrides `max_dest_rd_atomic` (RTR) and
    /// `initiator_depth` overrides `max_rd_atomic` (RTS).
    pub fn ready_qp(
        &self,
        qp: &QueuePair,
        responder_resources: Option<u8>,
        initiator_depth: Option<u8>,
    ) -> Result<()> {
        qp.modify(&self.init_qp_attr(QpState::Init)?)?;
        let mut rtr = self.init_qp_attr(QpState::Rtr)?;
        if let Some(r) = responder_resources {
            rtr.set_max_dest_rd_atomic(r);
        }
        qp.modify(&rtr)?;
        let mut rts = self.init_qp_attr(QpState::Rts)?;
        if let Some(d) = initiator_depth {
            rts.set_max_rd_atomic(d);
        }
        qp.modify(&rts)
    }

    /// The device context the id is bound to (after bind to a device
    /// address, address resolution, or for a connection request). Keeps
    /// the id alive.
    pub fn verbs_context(&self) -> Result<Arc<Context>> {
        // SAFETY: field read of a valid id; librdmacm keeps `verbs` open
        // while the id exists, which the returned Context guarantees.
        let verbs = unsafe { (*self.ptr()).verbs };
        let verbs = NonNull::new(verbs).ok_or(Error::Invalid("CM id not bound to a device"))?;
        Ok(Context::from_cm(verbs, self.inner.clone()))
    }

    /// The port number of the device the id is bound to (0 if none).
    pub fn port_num(&self) -> u8 {
        // SAFETY: field read of a valid id.
        unsafe { (*self.ptr()).port_num }
    }

    /// Local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: valid id; the union holds a sockaddr_storage.
        let ss = unsafe { (*self.ptr()).route.addr.src_addr_union.src_storage };
        from_sockaddr(&ss)
    }

    /// Peer address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as in local_addr.
        let ss = unsafe { (*self.ptr()).route.addr.dst_addr_union.dst_storage };
        from_sockaddr(&ss)
    }
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// `SocketAddr` → `sockaddr_storage` holding a `sockaddr_in`/`sockaddr_in6`.
pub(crate) fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in and is aligned for the storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// `sockaddr_storage` → `SocketAddr` for AF_INET/AF_INET6.
pub(crate) fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: family says it holds a sockaddr_in; alignment ok.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says it holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["169.254.77.1:7471", "[fe80::ff:fe00:7701]:5555", "0.0.0.0:0"] {
            let a: SocketAddr = a.parse().unwrap();
            let (ss, len) = to_sockaddr(a);
            assert_eq!(from_sockaddr(&ss), Some(a));
            assert!(len as usize <= std::mem::size_of::<libc::sockaddr_storage>());
        }
        let (ss, _) = to_sockaddr("169.254.77.1:7471".parse().unwrap());
        // Network byte order on the wire: port 7471 = 0x1d2f.
        let bytes: [u8; 8] =
            // SAFETY: reading the first 8 bytes of the storage.
            unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
        assert_eq!(&bytes[2..8], &[0x1d, 0x2f, 169, 254, 77, 1]);
    }

    #[test]
    fn conn_param_limits() {
        let big = [0u8; 256];
        assert!(ConnParam {
            private_data: &big,
            ..Default::default()
        }
        .to_sys()
        .is_err());
        let p = ConnParam {
            private_data: &big[..56],
            responder_resources: 4,
            qp_num: 9,
            srq: true,
            ..Default::default()
        }
        .to_sys()
        .unwrap();
        assert_eq!(
            (p.private_data_len, p.responder_resources, p.qp_num, p.srq),
            (56, 4, 9, 1)
        );
        assert!(ConnParam::default().to_sys().unwrap().private_data.is_null());
    }

    #[test]
    fn sockaddr_ib_bytes() {
        let mut gid = [0u8; 16];
        gid[0] = 0xfe;
        gid[1] = 0x80;
        gid[8..].copy_from_slice(&0x0002_c903_0001_0001u64.to_be_bytes());
        let a = IbAddr {
            gid: Gid(gid),
            pkey: 0xffff,
            service_id: 0x0000_0000_013f_15b3,
            service_id_mask: !0,
        };
        let s = a.to_sys();
        assert_eq!(std::mem::size_of::<SockaddrIb>(), 48);
        // SAFETY: reading the plain-data struct as its 48 bytes.
        let b: [u8; 48] = unsafe { std::mem::transmute(s) };
        assert_eq!(&b[0..2], &AF_IB.to_ne_bytes());
        assert_eq!(&b[2..4], &[0xff, 0xff], "P_Key in network order");
        assert_eq!(&b[8..24], &gid, "GID bytes unchanged");
        assert_eq!(
            &b[24..32],
            &[0, 0, 0, 0, 0x01, 0x3f, 0x15, 0xb3],
            "service ID, network order"
        );
        assert_eq!(&b[32..40], &[0xff; 8]);
        assert_eq!(&b[40..48], &[0; 8]);
    }

    #[test]
    fn event_kinds() {
        assert_eq!(CmEventKind::from_raw(4), CmEventKind::ConnectRequest);
        assert_eq!(CmEventKind::from_raw(10), CmEventKind::Disconnected);
        assert_eq!(CmEventKind::from_raw(99), CmEventKind::Other(99));
        assert!(CmEventKind::Rejected.has_conn_param());
        assert!(!CmEventKind::Disconnected.has_conn_param());
    }
}

/// An [`EventChannel`] registered with the tokio reactor.
#[derive(Debug)]
pub struct AsyncEventChannel(Arc<EventChannel>);

impl std::os::fd::AsRawFd for AsyncEventChannel {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl EventChannel {
    /// Registers the channel's (non-blocking) descriptor with the current
    /// tokio runtime, for waiting on events without blocking a thread.
    pub fn to_async(self: &Arc<Self>) -> std::io::Result<tokio::io::unix::AsyncFd<AsyncEventChannel>> {
        // SAFETY: the AsyncFd owns an Arc of the channel, so the descriptor
        // stays open and refers to the same channel for the AsyncFd's whole
        // life, and `as_raw_fd` always returns that descriptor.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                AsyncEventChannel(self.clone()),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| e.into())
    }
}
