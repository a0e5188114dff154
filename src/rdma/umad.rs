//! A safe wrapper over libibumad: a port's `/dev/infiniband/umadN`, MAD
//! agents registered on it, and 256-byte MAD send/receive.
//!
//! - [`UmadPort`] owns the fd (opened non-blocking by libibumad); it is
//!   `AsRawFd`/`AsFd`; [`UmadPort::to_async`] registers it with tokio
//!   (`AsyncFd`), and the target calls [`UmadPort::recv`] with a zero
//!   timeout when it is readable (`driver::dm`).
//! - [`Agent`] unregisters itself on drop (errors are logged, never
//!   panicked on) and keeps the port open through an `Arc`.
//! - [`MadAddress`] is filled into `ib_mad_addr` directly rather than
//!   through `umad_set_addr`/`umad_set_grh`: the latter does not copy
//!   `gid_index`, and on RoCE (rxe) every MAD needs a GRH with a valid
//!   source GID index.
//! - [`port_info`] combines `umad_get_port` with the GID table from sysfs
//!   (libibumad only reports GID 0).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::raw::{c_int, c_long, c_void};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use srptd_ffi::umad as sys;

/// Size of a MAD without RMPP.
pub const MAD_SIZE: usize = 256;
/// The GSI Q_Key (`IB_QP1_QKEY`).
pub const QP1_QKEY: u32 = 0x8001_0000;
/// Port capability bit IsDeviceManagementSupported
/// (`IB_PORT_DEVICE_MGMT_SUP`), set by ib_srpt with `ib_modify_port()`.
pub const CAP_DEVICE_MGMT: u32 = 1 << 19;

/// A GRH to send with a MAD (mandatory on RoCE), or the one a MAD came
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grh {
    /// Destination GID (send) or source GID (receive), network order.
    pub gid: [u8; 16],
    /// Local source GID index used for sending.
    pub gid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
}

/// Where a MAD goes to or came from, in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MadAddress {
    /// Remote QP: 1 for GSI classes such as DevMgt.
    pub qpn: u32,
    /// [`QP1_QKEY`] for QP1.
    pub qkey: u32,
    /// Destination (or source) LID; 0 on RoCE.
    pub lid: u16,
    pub sl: u8,
    pub path_bits: u8,
    pub grh: Option<Grh>,
    pub pkey_index: u16,
}

impl MadAddress {
    /// GSI (QP1) address of `lid`, optionally routed by GID.
    pub fn gsi(lid: u16, grh: Option<Grh>) -> Self {
        Self {
            qpn: 1,
            qkey: QP1_QKEY,
            lid,
            grh,
            ..Default::default()
        }
    }

    /// The address to answer a MAD received from `self`: same QP, LID, SL
    /// and P_Key index, the Q_Key of QP1 when the requester is QP1, and a
    /// GRH back to the source GID if the request had one, sent from the
    /// local GID index the request arrived on, hop limit 255 (what the
    /// kernel's `ib_create_ah_from_wc` does for ib_srpt's answers).
    pub fn reply(&self) -> Self {
        Self {
            qkey: if self.qpn == 1 { QP1_QKEY } else { self.qkey },
            grh: self.grh.map(|g| Grh { hop_limit: 0xff, ..g }),
            ..*self
        }
    }

    fn to_sys(self) -> sys::ib_mad_addr {
        let mut a = sys::ib_mad_addr {
            qpn: self.qpn.to_be(),
            qkey: self.qkey.to_be(),
            lid: self.lid.to_be(),
            sl: self.sl,
            path_bits: self.path_bits,
            pkey_index: self.pkey_index,
            ..Default::default()
        };
        if let Some(g) = self.grh {
            a.grh_present = 1;
            a.gid = g.gid;
            a.gid_index = g.gid_index;
            a.hop_limit = g.hop_limit;
            a.traffic_class = g.traffic_class;
            a.flow_label = (g.flow_label & 0xf_ffff).to_be();
        }
        a
    }

    fn from_sys(a: &sys::ib_mad_addr) -> Self {
        Self {
            qpn: u32::from_be(a.qpn),
            qkey: u32::from_be(a.qkey),
            lid: u16::from_be(a.lid),
            sl: a.sl,
            path_bits: a.path_bits,
            grh: (a.grh_present != 0).then(|| Grh {
                gid: a.gid,
                gid_index: a.gid_index,
                hop_limit: a.hop_limit,
                traffic_class: a.traffic_class,
                flow_label: u32::from_be(a.flow_label) & 0xf_ffff,
            }),
            pkey_index: a.pkey_index,
        }
    }
}

/// `struct ib_user_mad` followed by room for one MAD, as read from and
/// written to the umad device.
#[repr(C)]
struct UmadBuf {
    hdr: sys::ib_user_mad,
    data: [u8; MAD_SIZE],
}

impl UmadBuf {
    fn new() -> Self {
        Self {
            hdr: sys::ib_user_mad::default(),
            data: [0; MAD_SIZE],
        }
    }
}

/// A MAD read from the port.
#[derive(Clone)]
pub struct ReceivedMad {
    /// The agent it was delivered to.
    pub agent_id: u32,
    /// Who sent it (for a returned request: where it was sent).
    pub addr: MadAddress,
    /// The MAD; bytes past `len` are zero.
    pub mad: [u8; MAD_SIZE],
    pub len: usize,
    /// 0, or an errno: `ETIMEDOUT` when this is one of our requests that
    /// the kernel gave back after its timeout and retries ran out.
    pub status: u32,
}

impl fmt::Debug for ReceivedMad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMad")
            .field("agent_id", &self.agent_id)
            .field("addr", &self.addr)
            .field("len", &self.len)
            .field("status", &self.status)
            .field("header", &format_args!("{:02x?}", &self.mad[..24]))
            .finish()
    }
}

struct PortInner {
    fd: c_int,
    ca_name: String,
    port: u8,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: fd came from umad_open_port and is closed exactly once,
        // here, when the last UmadPort/Agent holding it goes away.
        let rc = unsafe { sys::umad_close_port(self.fd) };
        if rc < 0 {
            tracing::error!(device = %self.ca_name, port = self.port, rc, "umad_close_port failed");
        }
    }
}

/// An open umad port (`/dev/infiniband/umadN` of one device port).
#[derive(Clone)]
pub struct UmadPort {
    inner: Arc<PortInner>,
}

impl fmt::Debug for UmadPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UmadPort")
            .field("device", &self.inner.ca_name)
            .field("port", &self.inner.port)
            .field("fd", &self.inner.fd)
            .finish()
    }
}

fn init() -> io::Result<()> {
    static RC: OnceLock<c_int> = OnceLock::new();
    // SAFETY: umad_init takes no arguments; it checks the kernel ABI
    // version in sysfs. OnceLock runs it once per process.
    let rc = *RC.get_or_init(|| unsafe { sys::umad_init() });
    if rc < 0 {
        return Err(io::Error::other(format!(
            "umad_init failed ({rc}): is ib_umad loaded?"
        )));
    }
    Ok(())
}

fn neg_errno(rc: c_int) -> io::Error {
    io::Error::from_raw_os_error(rc.checked_neg().unwrap_or(libc::EIO))
}

fn c_name(device: &str) -> io::Result<CString> {
    CString::new(device).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "device name contains NUL"))
}

impl UmadPort {
    /// Open the umad device of `device` port `port` (1-based).
    pub fn open(device: &str, port: u8) -> io::Result<UmadPort> {
        init()?;
        let name = c_name(device)?;
        // SAFETY: name is a valid NUL-terminated string for the call.
        let fd = unsafe { sys::umad_open_port(name.as_ptr(), c_int::from(port)) };
        if fd < 0 {
            return Err(io::Error::new(
                neg_errno(fd).kind(),
                format!("umad_open_port({device}, {port}) failed ({fd}): is ib_umad loaded?"),
            ));
        }
        let p = UmadPort {
            inner: Arc::new(PortInner {
                fd,
                ca_name: device.to_owned(),
                port,
            }),
        };
        // SAFETY: no arguments; reads libibumad's ABI flag set by open.
        let size = unsafe { sys::umad_size() };
        if size != std::mem::size_of::<sys::ib_user_mad>() {
            return Err(io::Error::other(format!(
                "libibumad uses a {size}-byte ib_user_mad header (kernel without P_Key index support?)"
            )));
        }
        Ok(p)
    }

    pub fn device(&self) -> &str {
        &self.inner.ca_name
    }

    pub fn port(&self) -> u8 {
        self.inner.port
    }

    /// Attributes of this port (see [`port_info`]).
    pub fn port_info(&self) -> io::Result<PortInfo> {
        port_info(&self.inner.ca_name, self.inner.port)
    }

    /// Register an agent for `mgmt_class` version `class_version` that
    /// receives unsolicited requests with the given `methods` (may be
    /// empty: a pure requester still gets the responses to its own
    /// requests). Fails with `EPERM` when another agent (e.g. the kernel's
    /// ib_srpt for class 0x06) already owns those methods.
    pub fn register_agent(&self, mgmt_class: u8, class_version: u8, methods: &[u8]) -> io::Result<Agent> {
        let mut mask: sys::umad_method_mask = Default::default();
        let bits = c_long::BITS as usize;
        for &m in methods {
            let m = usize::from(m);
            // Methods are 7-bit (bit 7 is the response bit): m < 128.
            let Some(word) = mask.get_mut(m / bits) else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "method above 127"));
            };
            *word |= 1 << (m % bits);
        }
        // SAFETY: fd is open; mask is a live array of the size umad.h
        // declares; the call copies it.
        let id = unsafe {
            sys::umad_register(
                self.inner.fd,
                c_int::from(mgmt_class),
                c_int::from(class_version),
                0,
                mask.as_mut_ptr(),
            )
        };
        if id < 0 {
            return Err(io::Error::new(
                neg_errno(id).kind(),
                format!(
                    "umad_register(class {mgmt_class:#04x} v{class_version}, methods {methods:02x?}) failed ({id}); \
                     another agent (e.g. ib_srpt) may own it"
                ),
            ));
        }
        Ok(Agent {
            port: self.inner.clone(),
            id: id as u32,
            mgmt_class,
            registered: true,
        })
    }

    /// Send a 256-byte MAD through `agent` to `addr`. For a request,
    /// `timeout_ms > 0` makes the kernel match the response (delivered by
    /// [`UmadPort::recv`]) and retransmit `retries` times; if none comes
    /// the request itself is returned with status `ETIMEDOUT`. Use 0 for
    /// responses.
    pub fn send(
        &self,
        agent: &Agent,
        addr: &MadAddress,
        mad: &[u8; MAD_SIZE],
        timeout_ms: u32,
        retries: u32,
    ) -> io::Result<()> {
        if !Arc::ptr_eq(&agent.port, &self.inner) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "agent belongs to another port",
            ));
        }
        let mut buf = UmadBuf::new();
        buf.hdr.addr = addr.to_sys();
        buf.data = *mad;
        // SAFETY: buf is a live, properly laid out ib_user_mad followed by
        // MAD_SIZE bytes, which is what umad_send writes out.
        let rc = unsafe {
            sys::umad_send(
                self.inner.fd,
                agent.id as c_int,
                (&raw mut buf).cast::<c_void>(),
                MAD_SIZE as c_int,
                c_int::try_from(timeout_ms).unwrap_or(c_int::MAX),
                c_int::try_from(retries).unwrap_or(c_int::MAX),
            )
        };
        if rc < 0 {
            // umad_send returns -EIO and leaves write()'s errno.
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("umad_send failed: {e}")));
        }
        Ok(())
    }

    /// Receive one MAD. `timeout`: `None` or zero polls without waiting.
    /// Returns `Ok(None)` when nothing arrived in time.
    pub fn recv(&self, timeout: Option<Duration>) -> io::Result<Option<ReceivedMad>> {
        let ms = timeout.map_or(0, |t| c_int::try_from(t.as_millis()).unwrap_or(c_int::MAX));
        let mut buf = UmadBuf::new();
        let mut len = MAD_SIZE as c_int;
        // SAFETY: buf has room for the header and MAD_SIZE bytes, and len
        // says so; umad_recv reads at most umad_size() + len bytes.
        let rc = unsafe { sys::umad_recv(self.inner.fd, (&raw mut buf).cast::<c_void>(), &mut len, ms) };
        if rc < 0 {
            let errno = rc.checked_neg().unwrap_or(libc::EIO);
            if errno == libc::ETIMEDOUT || errno == libc::EWOULDBLOCK || errno == libc::EAGAIN {
                return Ok(None);
            }
            if errno == libc::ENOSPC {
                return Err(io::Error::other(format!(
                    "received a MAD larger than {MAD_SIZE} bytes (RMPP?), dropped"
                )));
            }
            return Err(neg_errno(rc));
        }
        let len = usize::try_from(len).unwrap_or(0).min(MAD_SIZE);
        Ok(Some(ReceivedMad {
            agent_id: rc as u32,
            addr: MadAddress::from_sys(&buf.hdr.addr),
            mad: buf.data,
            len,
            status: buf.hdr.status,
        }))
    }
}

impl UmadPort {
    /// This port registered with the current tokio runtime for
    /// readability: when it is readable, [`UmadPort::recv`] with no
    /// timeout returns MADs until `Ok(None)`. Must be called inside the
    /// runtime.
    pub fn to_async(&self) -> io::Result<tokio::io::unix::AsyncFd<UmadPort>> {
        // SAFETY: the AsyncFd owns a clone of this port, whose Arc keeps
        // the descriptor open (it is closed only when the last clone goes)
        // for the AsyncFd's whole life, and `as_raw_fd` always returns that
        // same descriptor.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                self.clone(),
                tokio::io::Interest::READABLE | tokio::io::Interest::ERROR,
            )
        }
        .map_err(|e| e.into())
    }
}

impl AsRawFd for UmadPort {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd
    }
}

impl AsFd for UmadPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open as long as self.inner, which outlives
        // the borrow.
        unsafe { BorrowedFd::borrow_raw(self.inner.fd) }
    }
}

/// A registered MAD agent; unregistered on drop.
pub struct Agent {
    port: Arc<PortInner>,
    id: u32,
    mgmt_class: u8,
    /// False once the kernel has unregistered it (its port went away).
    registered: bool,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.id)
            .field("mgmt_class", &self.mgmt_class)
            .field("device", &self.port.ca_name)
            .field("port", &self.port.port)
            .finish()
    }
}

impl Agent {
    /// The id `recv` reports for MADs delivered to this agent.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The port went away (its umad file reports an error): the kernel has
    /// unregistered the agent itself, so dropping it does not try to.
    pub fn forget(&mut self) {
        self.registered = false;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        // SAFETY: the fd is still open (we hold its Arc) and id was
        // returned by umad_register on it.
        let rc = unsafe { sys::umad_unregister(self.port.fd, self.id as c_int) };
        if rc < 0 {
            tracing::error!(
                agent = self.id,
                class = self.mgmt_class,
                rc,
                "umad_unregister failed"
            );
        }
    }
}

/// The port's link layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLayer {
    InfiniBand,
    /// RoCE (rxe, mlx5 in Ethernet mode...).
    Ethernet,
    Other(String),
}

/// One entry of the port's GID table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GidEntry {
    pub index: u8,
    pub gid: [u8; 16],
    /// `gid_attrs/types/N`: "IB/RoCE v1" or "RoCE v2", if present.
    pub gid_type: Option<String>,
    /// `gid_attrs/ndevs/N`: the netdev of a RoCE GID.
    pub netdev: Option<String>,
}

/// Port attributes: `umad_get_port()` plus the sysfs GID table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub device: String,
    pub port: u8,
    pub base_lid: u16,
    pub lmc: u8,
    pub sm_lid: u16,
    pub sm_sl: u8,
    /// 4 = ACTIVE.
    pub state: u32,
    pub phys_state: u32,
    pub rate: u32,
    /// Port CapabilityMask (host order); see [`CAP_DEVICE_MGMT`].
    pub cap_mask: u32,
    pub gid_prefix: u64,
    pub port_guid: u64,
    pub pkeys: Vec<u16>,
    pub link_layer: LinkLayer,
    /// Non-zero GIDs, by index.
    pub gids: Vec<GidEntry>,
}

impl PortInfo {
    /// Whether IsDeviceManagementSupported is set (srp_daemon only queries
    /// ports whose PortInfo has it).
    pub fn is_device_mgmt_supported(&self) -> bool {
        self.cap_mask & CAP_DEVICE_MGMT != 0
    }

    pub fn gid(&self, index: u8) -> Option<[u8; 16]> {
        self.gids.iter().find(|g| g.index == index).map(|g| g.gid)
    }
}

fn cstr_field(b: &[std::os::raw::c_char]) -> String {
    let bytes: Vec<u8> = b.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parse a sysfs GID ("fe80:0000:0000:0000:0000:00ff:fe00:7701").
pub fn parse_gid(s: &str) -> Option<[u8; 16]> {
    crate::wire::parse_hex(s.trim())
}

/// Read the attributes of `device` port `port`.
pub fn port_info(device: &str, port: u8) -> io::Result<PortInfo> {
    init()?;
    let name = c_name(device)?;
    let mut p = std::mem::MaybeUninit::<sys::umad_port_t>::zeroed();
    // SAFETY: name is NUL-terminated; p is writable storage for a
    // umad_port_t, which umad_get_port fills.
    let rc = unsafe { sys::umad_get_port(name.as_ptr(), c_int::from(port), p.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::new(
            neg_errno(rc).kind(),
            format!("umad_get_port({device}, {port}) failed ({rc})"),
        ));
    }
    // SAFETY: zero-initialised and filled by a successful umad_get_port.
    let mut p = unsafe { p.assume_init() };
    let pkeys = if p.pkeys.is_null() {
        Vec::new()
    } else {
        // SAFETY: libibumad allocated pkeys_size entries at pkeys.
        unsafe { std::slice::from_raw_parts(p.pkeys, p.pkeys_size as usize) }.to_vec()
    };
    let ll = cstr_field(&p.link_layer);
    let mut info = PortInfo {
        device: cstr_field(&p.ca_name),
        port,
        base_lid: p.base_lid as u16,
        lmc: p.lmc as u8,
        sm_lid: p.sm_lid as u16,
        sm_sl: p.sm_sl as u8,
        state: p.state,
        phys_state: p.phys_state,
        rate: p.rate,
        cap_mask: u32::from_be(p.capmask),
        gid_prefix: u64::from_be(p.gid_prefix),
        port_guid: u64::from_be(p.port_guid),
        pkeys,
        link_layer: match ll.as_str() {
            "InfiniBand" | "IB" => LinkLayer::InfiniBand,
            "Ethernet" => LinkLayer::Ethernet,
            _ => LinkLayer::Other(ll),
        },
        gids: Vec::new(),
    };
    // SAFETY: p was filled by umad_get_port and is released once.
    let rc = unsafe { sys::umad_release_port(&mut p) };
    if rc < 0 {
        tracing::warn!(device, port, rc, "umad_release_port failed");
    }
    let dir = format!("/sys/class/infiniband/{device}/ports/{port}");
    for index in 0..=255u8 {
        let Ok(s) = std::fs::read_to_string(format!("{dir}/gids/{index}")) else {
            break;
        };
        let Some(gid) = parse_gid(&s) else { continue };
        if gid == [0; 16] {
            continue;
        }
        let attr = |kind: &str| {
            std::fs::read_to_string(format!("{dir}/gid_attrs/{kind}/{index}"))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        info.gids.push(GidEntry {
            index,
            gid,
            gid_type: attr("types"),
            netdev: attr("ndevs"),
        });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trip() {
        let a = MadAddress {
            qpn: 1,
            qkey: QP1_QKEY,
            lid: 0x1234,
            sl: 3,
            path_bits: 0,
            grh: Some(Grh {
                gid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0x77, 0x01],
                gid_index: 0,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0x12345,
            }),
            pkey_index: 0,
        };
        let s = a.to_sys();
        assert_eq!(s.qpn.to_ne_bytes(), [0, 0, 0, 1]);
        assert_eq!(s.qkey.to_ne_bytes(), [0x80, 0x01, 0, 0]);
        assert_eq!(s.lid.to_ne_bytes(), [0x12, 0x34]);
        assert_eq!(s.grh_present, 1);
        assert_eq!(MadAddress::from_sys(&s), a);
        let r = a.reply();
        assert_eq!(r.grh.unwrap().gid_index, 0);
        assert_eq!(r.grh.unwrap().hop_limit, 0xff);
        assert_eq!(r.qkey, QP1_QKEY);
    }

    #[test]
    fn gid_parse() {
        assert_eq!(
            parse_gid("fe80:0000:0000:0000:0000:00ff:fe00:7701\n"),
            Some([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0x77, 0x01])
        );
        assert_eq!(parse_gid("fe80::1"), None);
        assert_eq!(parse_gid("0:0:0:0:0:0:0:0:0"), None);
    }
}
