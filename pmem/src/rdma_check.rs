//! Proves a log region can be an RDMA target: registers it as a memory region with the first
//! verbs device (remote write + read), as the transport would for a follower's log, then
//! deregisters. Only built with the `rdma-check` feature (links the system libibverbs); used by
//! the NVDIMM guest suite, where device-DAX registration must succeed and fsdax must not.

use std::ffi::{c_char, c_int, c_void, CStr};

#[repr(C)]
struct IbvDevice {
    _opaque: [u8; 0],
}
#[repr(C)]
struct IbvContext {
    _opaque: [u8; 0],
}
#[repr(C)]
struct IbvPd {
    _opaque: [u8; 0],
}
#[repr(C)]
struct IbvMr {
    _opaque: [u8; 0],
}

const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
const IBV_ACCESS_REMOTE_WRITE: c_int = 2;
const IBV_ACCESS_REMOTE_READ: c_int = 4;

#[link(name = "ibverbs")]
extern "C" {
    fn ibv_get_device_list(num_devices: *mut c_int) -> *mut *mut IbvDevice;
    fn ibv_free_device_list(list: *mut *mut IbvDevice);
    fn ibv_get_device_name(device: *mut IbvDevice) -> *const c_char;
    fn ibv_open_device(device: *mut IbvDevice) -> *mut IbvContext;
    fn ibv_close_device(context: *mut IbvContext) -> c_int;
    fn ibv_alloc_pd(context: *mut IbvContext) -> *mut IbvPd;
    fn ibv_dealloc_pd(pd: *mut IbvPd) -> c_int;
    fn ibv_reg_mr(pd: *mut IbvPd, addr: *mut c_void, length: usize, access: c_int) -> *mut IbvMr;
    fn ibv_dereg_mr(mr: *mut IbvMr) -> c_int;
}

/// Registers `addr..addr+len` with the first RDMA device; returns the device name, or why not.
pub fn register_region(addr: *mut u8, len: usize) -> Result<String, String> {
    // SAFETY: each pointer passed below was returned non-null by the matching libibverbs call and
    // is released exactly once, in reverse order; `addr..addr+len` is a live mapping the caller
    // owns for the duration of the call (registration pins it; deregistration unpins it).
    unsafe {
        let mut count: c_int = 0;
        let list = ibv_get_device_list(&mut count);
        if list.is_null() || count == 0 {
            if !list.is_null() {
                ibv_free_device_list(list);
            }
            return Err("no RDMA device (set up rxe first)".into());
        }
        let device = *list;
        let name = CStr::from_ptr(ibv_get_device_name(device)).to_string_lossy().into_owned();
        let context = ibv_open_device(device);
        ibv_free_device_list(list);
        if context.is_null() {
            return Err(format!("{name}: ibv_open_device: {}", std::io::Error::last_os_error()));
        }
        let pd = ibv_alloc_pd(context);
        if pd.is_null() {
            let e = std::io::Error::last_os_error();
            ibv_close_device(context);
            return Err(format!("{name}: ibv_alloc_pd: {e}"));
        }
        let access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
        let mr = ibv_reg_mr(pd, addr.cast(), len, access);
        let result = if mr.is_null() {
            Err(format!("{name}: ibv_reg_mr of {len} bytes: {}", std::io::Error::last_os_error()))
        } else {
            ibv_dereg_mr(mr);
            Ok(name)
        };
        ibv_dealloc_pd(pd);
        ibv_close_device(context);
        result
    }
}
