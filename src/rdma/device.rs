//! Devices and device contexts: listing, opening, attribute and port queries.

use std::ffi::CStr;
use std::fmt;
use std::mem::MaybeUninit;
use std::net::Ipv6Addr;
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys as sys;

use super::cm::CmIdInner;
use super::{check, Error, Ptr, Result};

/// A device found by [`devices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel device name (`rxe0`, `mlx5_0`).
    pub name: String,
    /// Node GUID, host byte order.
    pub guid: u64,
}

/// Lists the RDMA devices present.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    let mut n = 0i32;
    // SAFETY: out-parameter is a valid i32; list freed below.
    let list = unsafe { sys::ibv_get_device_list(&mut n) };
    if list.is_null() {
        return Err(Error::last("ibv_get_device_list"));
    }
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for i in 0..n.max(0) as usize {
        // SAFETY: list has n valid device pointers.
        let dev = unsafe { *list.add(i) };
        if dev.is_null() {
            break;
        }
        out.push(DeviceInfo {
            // SAFETY: valid device from the list, freed only after this loop.
            name: unsafe { device_name(dev) },
            // SAFETY: as above.
            guid: u64::from_be(unsafe { sys::ibv_get_device_guid(dev) }),
        });
    }
    // SAFETY: list came from ibv_get_device_list and is freed once.
    unsafe { sys::ibv_free_device_list(list) };
    Ok(out)
}

/// # Safety
/// `dev` must be a valid `ibv_device`.
pub(crate) unsafe fn device_name(dev: *mut sys::ibv_device) -> String {
    // SAFETY: the caller passes a valid device; the name is a C string
    // owned by it.
    let p = unsafe { sys::ibv_get_device_name(dev) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null NUL-terminated string owned by the device.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

enum Owner {
    /// Opened by us with `ibv_open_device`: closed on drop.
    Opened,
    /// Borrowed from librdmacm (`cm_id->verbs`): kept open by the CM id,
    /// which this `Arc` keeps alive.
    CmId(Arc<CmIdInner>),
}

/// An open device context (`ibv_context`).
pub struct Context {
    ctx: NonNull<sys::ibv_context>,
    owner: Owner,
}

// SAFETY: libibverbs contexts are thread-safe; every verb may be called
// from any thread.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name())
            .field("ctx", &Ptr(self.ctx.as_ptr() as usize))
            .field("from_cm_id", &matches!(self.owner, Owner::CmId(_)))
            .finish()
    }
}

impl Context {
    /// Opens the device called `name`.
    pub fn open(name: &str) -> Result<Arc<Context>> {
        let mut n = 0i32;
        // SAFETY: out-parameter is valid; list freed below on every path.
        let list = unsafe { sys::ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(Error::last("ibv_get_device_list"));
        }
        let mut found = None;
        for i in 0..n.max(0) as usize {
            // SAFETY: list has n valid entries.
            let dev = unsafe { *list.add(i) };
            // SAFETY: valid device from the list.
            if !dev.is_null() && unsafe { device_name(dev) } == name {
                found = Some(dev);
                break;
            }
        }
        let result = match found {
            None => Err(Error::errno("ibv_open_device", libc::ENODEV)),
            Some(dev) => {
                // SAFETY: valid device; the context outlives the list.
                let ctx = unsafe { sys::ibv_open_device(dev) };
                NonNull::new(ctx)
                    .map(|ctx| {
                        Arc::new(Context {
                            ctx,
                            owner: Owner::Opened,
                        })
                    })
                    .ok_or_else(|| Error::last("ibv_open_device"))
            }
        };
        // SAFETY: freed once; opened contexts stay valid after this.
        unsafe { sys::ibv_free_device_list(list) };
        result
    }

    /// Wraps librdmacm's context of a CM id, keeping the id alive.
    pub(crate) fn from_cm(ctx: NonNull<sys::ibv_context>, id: Arc<CmIdInner>) -> Arc<Context> {
        Arc::new(Context {
            ctx,
            owner: Owner::CmId(id),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ibv_context {
        self.ctx.as_ptr()
    }

    /// The CM id of a context borrowed from librdmacm.
    pub(crate) fn cm_id(&self) -> Option<&Arc<CmIdInner>> {
        match &self.owner {
            Owner::CmId(id) => Some(id),
            Owner::Opened => None,
        }
    }

    /// The context's command and async event descriptors (`cmd_fd`,
    /// `async_fd`; -1 if it has none).
    pub(crate) fn fds(&self) -> (std::os::fd::RawFd, std::os::fd::RawFd) {
        // SAFETY: plain field reads of a valid context.
        unsafe { ((*self.ctx.as_ptr()).cmd_fd, (*self.ctx.as_ptr()).async_fd) }
    }

    /// Whether `self` and `other` are the same `ibv_context` (e.g. two CM
    /// ids on one device), so objects of one can be used with the other.
    pub fn same_context(&self, other: &Context) -> bool {
        self.ctx == other.ctx
    }

    /// Device name (`rxe0`).
    pub fn name(&self) -> String {
        // SAFETY: ctx is valid; ctx->device is set by libibverbs for the
        // context's lifetime.
        unsafe { device_name((*self.ctx.as_ptr()).device) }
    }

    /// Node GUID in host byte order.
    pub fn node_guid(&self) -> u64 {
        // SAFETY: as in `name`.
        u64::from_be(unsafe { sys::ibv_get_device_guid((*self.ctx.as_ptr()).device) })
    }

    /// Number of completion vectors (interrupt lines) for CQs.
    pub fn num_comp_vectors(&self) -> i32 {
        // SAFETY: plain field read of a valid context.
        unsafe { (*self.ctx.as_ptr()).num_comp_vectors }
    }

    /// Device attributes (`ibv_query_device`).
    pub fn query_device(&self) -> Result<DeviceAttr> {
        let mut a = MaybeUninit::<sys::ibv_device_attr>::zeroed();
        // SAFETY: valid context and a properly sized out-struct.
        check("ibv_query_device", unsafe {
            sys::ibv_query_device(self.as_ptr(), a.as_mut_ptr())
        })?;
        // SAFETY: zero-initialised plain-data struct filled by the call.
        let a = unsafe { a.assume_init() };
        // fw_ver is NUL-terminated unless the provider filled all 64 bytes.
        let fw_bytes: [u8; 64] = a.fw_ver.map(|c| c as u8);
        let fw_ver = CStr::from_bytes_until_nul(&fw_bytes)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&fw_bytes).into_owned());
        let u = |v: i32| v.max(0) as u32;
        Ok(DeviceAttr {
            fw_ver,
            node_guid: u64::from_be(a.node_guid),
            sys_image_guid: u64::from_be(a.sys_image_guid),
            max_mr_size: a.max_mr_size,
            page_size_cap: a.page_size_cap,
            vendor_id: a.vendor_id,
            vendor_part_id: a.vendor_part_id,
            hw_ver: a.hw_ver,
            max_qp: u(a.max_qp),
            max_qp_wr: u(a.max_qp_wr),
            device_cap_flags: a.device_cap_flags,
            max_sge: u(a.max_sge),
            max_sge_rd: u(a.max_sge_rd),
            max_cq: u(a.max_cq),
            max_cqe: u(a.max_cqe),
            max_mr: u(a.max_mr),
            max_pd: u(a.max_pd),
            max_qp_rd_atom: u(a.max_qp_rd_atom),
            max_qp_init_rd_atom: u(a.max_qp_init_rd_atom),
            max_res_rd_atom: u(a.max_res_rd_atom),
            max_srq: u(a.max_srq),
            max_srq_wr: u(a.max_srq_wr),
            max_srq_sge: u(a.max_srq_sge),
            max_pkeys: a.max_pkeys,
            local_ca_ack_delay: a.local_ca_ack_delay,
            phys_port_cnt: a.phys_port_cnt,
        })
    }

    /// Port attributes, through the shim (rdma-core's real inline
    /// `ibv_query_port`, which fills the whole current struct).
    pub fn query_port(&self, port: u8) -> Result<PortAttr> {
        let mut a = MaybeUninit::<sys::ibv_port_attr>::zeroed();
        // SAFETY: valid context; the out-struct is the current
        // `ibv_port_attr` layout from the same headers the shim uses.
        let rc =
            unsafe { srptd_ffi::srptd_ibv_query_port(self.as_ptr().cast(), port, a.as_mut_ptr().cast()) };
        check("ibv_query_port", rc)?;
        // SAFETY: zeroed plain data, filled by the call.
        let a = unsafe { a.assume_init() };
        Ok(PortAttr {
            state: PortState::from_raw(a.state),
            max_mtu: mtu_bytes(a.max_mtu),
            active_mtu: mtu_bytes(a.active_mtu),
            gid_tbl_len: a.gid_tbl_len.max(0) as u32,
            port_cap_flags: a.port_cap_flags,
            port_cap_flags2: a.port_cap_flags2,
            max_msg_sz: a.max_msg_sz,
            pkey_tbl_len: a.pkey_tbl_len,
            lid: a.lid,
            sm_lid: a.sm_lid,
            lmc: a.lmc,
            sm_sl: a.sm_sl,
            subnet_timeout: a.subnet_timeout,
            active_width: a.active_width,
            active_speed: a.active_speed,
            phys_state: a.phys_state,
            link_layer: LinkLayer::from_raw(a.link_layer),
        })
    }

    /// GID `index` of `port`.
    pub fn query_gid(&self, port: u8, index: u32) -> Result<Gid> {
        let mut g = MaybeUninit::<sys::ibv_gid>::zeroed();
        let index = i32::try_from(index).map_err(|_| Error::Invalid("GID index"))?;
        // SAFETY: valid context and 16-byte out union.
        check("ibv_query_gid", unsafe {
            sys::ibv_query_gid(self.as_ptr(), port, index, g.as_mut_ptr())
        })?;
        // SAFETY: the union is 16 plain bytes, all written or zeroed.
        Ok(Gid(unsafe { g.assume_init().raw }))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Owner::Opened = self.owner {
            // SAFETY: opened by us, closed once; every child holds an Arc of
            // this context so none is alive any more.
            let rc = unsafe { sys::ibv_close_device(self.ctx.as_ptr()) };
            if let Err(e) = check("ibv_close_device", rc) {
                tracing::error!("{e}");
            }
        }
    }
}

fn mtu_bytes(m: u32) -> u32 {
    match m {
        1..=5 => 128 << m,
        _ => 0,
    }
}

/// Selected device attributes (`ibv_device_attr`), GUIDs in host order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DeviceAttr {
    pub fw_ver: String,
    pub node_guid: u64,
    pub sys_image_guid: u64,
    pub max_mr_size: u64,
    pub page_size_cap: u64,
    pub vendor_id: u32,
    pub vendor_part_id: u32,
    pub hw_ver: u32,
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub device_cap_flags: u32,
    pub max_sge: u32,
    pub max_sge_rd: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_pd: u32,
    /// Max RDMA READs a QP can have outstanding as target (responder).
    pub max_qp_rd_atom: u32,
    /// Max RDMA READs a QP can initiate concurrently.
    pub max_qp_init_rd_atom: u32,
    pub max_res_rd_atom: u32,
    pub max_srq: u32,
    pub max_srq_wr: u32,
    pub max_srq_sge: u32,
    pub max_pkeys: u16,
    pub local_ca_ack_delay: u8,
    pub phys_port_cnt: u8,
}

/// `vendor_id` of the software RDMA devices: rdma_rxe (soft-RoCE) and siw
/// (soft-iWARP).
const SOFTWARE_VENDOR_IDS: [u32; 2] = [0x00ff_ffff, 0x0062_6d74];

impl DeviceAttr {
    /// Whether this is a software RDMA device, whose protocol processing
    /// (ACKs, retransmissions, READ responses) runs on the host's CPUs,
    /// partly inside the posting thread's system calls.
    pub fn is_software(&self) -> bool {
        SOFTWARE_VENDOR_IDS.contains(&self.vendor_id)
    }
}

/// Port state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PortState {
    Nop,
    Down,
    Init,
    Armed,
    Active,
    ActiveDefer,
    Unknown(u32),
}

impl PortState {
    fn from_raw(v: u32) -> PortState {
        match v {
            0 => PortState::Nop,
            1 => PortState::Down,
            2 => PortState::Init,
            3 => PortState::Armed,
            4 => PortState::Active,
            5 => PortState::ActiveDefer,
            v => PortState::Unknown(v),
        }
    }
}

/// Link layer of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    /// Not reported (old drivers; treat as InfiniBand).
    Unspecified,
    /// InfiniBand.
    InfiniBand,
    /// Ethernet: RoCE or soft-RoCE (rxe).
    Ethernet,
    /// A value this code does not know.
    Unknown(u8),
}

impl LinkLayer {
    fn from_raw(v: u8) -> LinkLayer {
        match v {
            0 => LinkLayer::Unspecified,
            1 => LinkLayer::InfiniBand,
            2 => LinkLayer::Ethernet,
            v => LinkLayer::Unknown(v),
        }
    }
}

/// Port attributes (`ibv_port_attr`); MTUs in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PortAttr {
    pub state: PortState,
    pub max_mtu: u32,
    pub active_mtu: u32,
    pub gid_tbl_len: u32,
    pub port_cap_flags: u32,
    pub port_cap_flags2: u16,
    pub max_msg_sz: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub sm_lid: u16,
    pub lmc: u8,
    pub sm_sl: u8,
    pub subnet_timeout: u8,
    pub active_width: u8,
    pub active_speed: u8,
    pub phys_state: u8,
    pub link_layer: LinkLayer,
}

/// A 128-bit GID in network byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    /// The subnet prefix (first 8 bytes) in host order.
    pub fn subnet_prefix(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().unwrap_or_default())
    }

    /// The interface id (last 8 bytes) in host order; for IB this is the
    /// port GUID.
    pub fn interface_id(&self) -> u64 {
        u64::from_be_bytes(self.0[8..].try_into().unwrap_or_default())
    }

    /// Whether the GID is all zeroes (an empty table entry).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Ipv6Addr::from(self.0), f)
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gid_parts_and_display() {
        let mut raw = [0u8; 16];
        raw[0] = 0xfe;
        raw[1] = 0x80;
        raw[8..].copy_from_slice(&0x0000_00ff_fe00_7701u64.to_be_bytes());
        let g = Gid(raw);
        assert_eq!(g.to_string(), "fe80::ff:fe00:7701");
        assert_eq!(g.subnet_prefix(), 0xfe80_0000_0000_0000);
        assert_eq!(g.interface_id(), 0x0000_00ff_fe00_7701);
        assert!(!g.is_zero());
    }

    #[test]
    fn enums_from_raw() {
        assert_eq!(mtu_bytes(3), 1024);
        assert_eq!(mtu_bytes(5), 4096);
        assert_eq!(mtu_bytes(9), 0);
        assert_eq!(LinkLayer::from_raw(2), LinkLayer::Ethernet);
        assert_eq!(PortState::from_raw(4), PortState::Active);
    }

    #[test]
    fn listing_devices_works_without_hardware() {
        // On a machine without RDMA this is an empty list (or ENOSYS when
        // the kernel lacks uverbs), never a crash.
        match devices() {
            Ok(list) => {
                for d in list {
                    assert!(!d.name.is_empty());
                }
            }
            Err(e) => assert!(e.raw_os_error().is_some()),
        }
    }
}
