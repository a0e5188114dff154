//! Raw bindings to librados and librbd (Ceph 16.2 `rados/librados.h`,
//! `rbd/librbd.h`), written by hand for the calls srptd needs: connecting
//! to a cluster, opening a pool's I/O context and an image, its size, and
//! asynchronous reads, writes, flushes, discards, write-zeroes and
//! write-sames whose completions call back into srptd.
//!
//! Handles are opaque pointers. The one struct, `rbd_image_info_t`, is
//! checked against the C header by `srptd_rbd_layout` (shim.c) in a test
//! of `srptd::rbd`.
//!
//! Nothing here is safe to call directly; `srptd::rbd` wraps it.

use std::os::raw::{c_char, c_int, c_void};

pub type rados_t = *mut c_void;
pub type rados_ioctx_t = *mut c_void;
pub type rbd_image_t = *mut c_void;
pub type rbd_completion_t = *mut c_void;
/// Called on a librbd thread when an asynchronous operation completes.
pub type rbd_callback_t = Option<unsafe extern "C" fn(c: rbd_completion_t, arg: *mut c_void)>;
/// Called on a librbd thread when the image header changes (size,
/// features, locks, snapshots).
pub type rbd_update_callback_t = Option<unsafe extern "C" fn(arg: *mut c_void)>;

/// `RBD_MAX_BLOCK_NAME_SIZE`.
pub const RBD_MAX_BLOCK_NAME_SIZE: usize = 24;
/// `RBD_MAX_IMAGE_NAME_SIZE`.
pub const RBD_MAX_IMAGE_NAME_SIZE: usize = 96;
/// `RBD_WRITE_ZEROES_FLAG_THICK_PROVISION`: write zeros instead of
/// deallocating.
pub const RBD_WRITE_ZEROES_FLAG_THICK_PROVISION: c_int = 1;
/// `RBD_FEATURE_EXCLUSIVE_LOCK` (`rbd/features.h`).
pub const RBD_FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;

/// `rbd_image_info_t` (`rbd_stat`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_image_info_t {
    pub size: u64,
    pub obj_size: u64,
    pub num_objs: u64,
    pub order: c_int,
    pub block_name_prefix: [c_char; RBD_MAX_BLOCK_NAME_SIZE],
    pub parent_pool: i64,
    pub parent_name: [c_char; RBD_MAX_IMAGE_NAME_SIZE],
}

const _: () = assert!(std::mem::size_of::<rbd_image_info_t>() == 160);

#[link(name = "rados")]
extern "C" {
    pub fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_conf_get(cluster: rados_t, option: *const c_char, buf: *mut c_char, len: usize) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    pub fn rados_shutdown(cluster: rados_t);
    pub fn rados_ioctx_create(cluster: rados_t, pool_name: *const c_char, ioctx: *mut rados_ioctx_t)
        -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
}

#[link(name = "rbd")]
extern "C" {
    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;
    pub fn rbd_stat(image: rbd_image_t, info: *mut rbd_image_info_t, infosize: usize) -> c_int;
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    pub fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
    pub fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    pub fn rbd_update_watch(
        image: rbd_image_t,
        handle: *mut u64,
        cb: rbd_update_callback_t,
        arg: *mut c_void,
    ) -> c_int;
    pub fn rbd_update_unwatch(image: rbd_image_t, handle: u64) -> c_int;

    pub fn rbd_aio_create_completion(arg: *mut c_void, cb: rbd_callback_t, c: *mut rbd_completion_t)
        -> c_int;
    pub fn rbd_aio_release(c: rbd_completion_t);
    pub fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    pub fn rbd_aio_wait_for_complete(c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_read(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *mut c_char,
        c: rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_discard(image: rbd_image_t, off: u64, len: u64, c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_writesame(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        data_len: usize,
        c: rbd_completion_t,
        op_flags: c_int,
    ) -> c_int;
    pub fn rbd_aio_write_zeroes(
        image: rbd_image_t,
        off: u64,
        len: usize,
        c: rbd_completion_t,
        zero_flags: c_int,
        op_flags: c_int,
    ) -> c_int;
}

extern "C" {
    /// Writes up to `n` sizes/offsets of librbd structs (see shim.c for
    /// the order) and returns how many there are.
    pub fn srptd_rbd_layout(out: *mut usize, n: c_int) -> c_int;
}
