//! Thin owning wrappers over libibverbs (rdma-sys): device context, protection domain, completion
//! queue, memory region and RC queue pair. The only module of `rdma` with `unsafe`.
//!
//! Every wrapper owns its object and destroys it on drop; the `Arc`s inside keep parents (context,
//! protection domain) alive as long as their children. libibverbs objects are thread-safe, so the
//! wrappers are `Send + Sync`.

use crate::mapping::Mapping;
use crate::VerbsError;
use rdma_sys::*;
use std::ffi::CStr;
use std::io;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Port every device here uses (rxe and single-port NICs).
pub const PORT: u8 = 1;

fn errno_error(op: &'static str, device: &str) -> VerbsError {
    let e = io::Error::last_os_error();
    let hint = match e.raw_os_error() {
        Some(libc::ENOMEM) if op == "ibv_reg_mr" => {
            return VerbsError::MemlockTooLow {
                device: device.into(),
                len: 0,
            }
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            ": not permitted (run as root or grant access to /dev/infiniband)"
        }
        Some(libc::EOPNOTSUPP) if op == "ibv_reg_mr" => {
            ": this memory cannot be pinned (fsdax pages cannot be registered; use device-DAX)"
        }
        Some(libc::EINVAL) => {
            ": invalid attributes (a state transition out of order, or a wrong GID index)"
        }
        _ => "",
    };
    VerbsError::Os {
        op,
        resource: device.into(),
        source: e,
        hint,
    }
}

/// An open device.
pub struct Context {
    raw: NonNull<ibv_context>,
    name: String,
}

// SAFETY: ibv_context is thread-safe per libibverbs' threading model.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl Context {
    /// Opens the device named `name`.
    ///
    /// # Errors
    /// `NoDevice` when no device has that name (lists those found); `Os` when opening fails
    /// (EPERM/EACCES: no access to /dev/infiniband/uverbs*).
    pub fn open(name: &str) -> Result<Arc<Context>, VerbsError> {
        let mut n = 0;
        // SAFETY: ibv_get_device_list writes the count and returns a NULL-terminated array we free below.
        let list = unsafe { ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(VerbsError::NoDevice {
                name: name.into(),
                found: format!("none ({})", io::Error::last_os_error()),
            });
        }
        let mut found = Vec::new();
        let mut ctx: *mut ibv_context = ptr::null_mut();
        for i in 0..n as usize {
            // SAFETY: i < n, entries are valid device pointers until the list is freed.
            let dev = unsafe { *list.add(i) };
            // SAFETY: ibv_get_device_name returns a NUL-terminated string owned by the device.
            let dev_name = unsafe { CStr::from_ptr(ibv_get_device_name(dev)) }
                .to_string_lossy()
                .into_owned();
            if dev_name == name && ctx.is_null() {
                // SAFETY: dev is valid; the context outlives the list (documented by libibverbs).
                ctx = unsafe { ibv_open_device(dev) };
                if ctx.is_null() {
                    let err = errno_error("ibv_open_device", name);
                    // SAFETY: list came from ibv_get_device_list.
                    unsafe { ibv_free_device_list(list) };
                    return Err(err);
                }
            }
            found.push(dev_name);
        }
        // SAFETY: list came from ibv_get_device_list and is not used after this.
        unsafe { ibv_free_device_list(list) };
        let raw = NonNull::new(ctx).ok_or_else(|| VerbsError::NoDevice {
            name: name.into(),
            found: found.join(", "),
        })?;
        Ok(Arc::new(Context {
            raw,
            name: name.into(),
        }))
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GID at `index` of port 1 (index 1 on rxe is the IPv4-mapped RoCE v2 GID).
    ///
    /// # Errors
    /// `Os` (EINVAL: index beyond the GID table).
    pub fn gid(&self, index: u8) -> Result<[u8; 16], VerbsError> {
        // SAFETY: ibv_gid is plain bytes; zero is a valid value.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: valid context, out-pointer to a local.
        let rc = unsafe { ibv_query_gid(self.raw.as_ptr(), PORT, i32::from(index), &mut gid) };
        if rc != 0 {
            return Err(errno_error("ibv_query_gid", &self.name));
        }
        // SAFETY: every bit pattern of the union is a valid [u8; 16].
        let raw = unsafe { gid.raw };
        if raw == [0u8; 16] {
            return Err(VerbsError::Config(format!(
                "{}: GID index {index} is empty (no IPv4 address on the netdev yet?)",
                self.name
            )));
        }
        Ok(raw)
    }

    /// The port's LID (0 on RoCE) and active MTU.
    ///
    /// # Errors
    /// `Os` when the query fails.
    pub fn port(&self) -> Result<(u16, ibv_mtu::Type), VerbsError> {
        // SAFETY: ibv_port_attr is plain data; zero is valid.
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context, out-pointer to a local of the right type.
        let rc = unsafe { ___ibv_query_port(self.raw.as_ptr(), PORT, &mut attr) };
        if rc != 0 {
            return Err(errno_error("ibv_query_port", &self.name));
        }
        Ok((attr.lid, attr.active_mtu))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: children hold an Arc to the context, so none is alive here.
        unsafe { ibv_close_device(self.raw.as_ptr()) };
    }
}

/// A protection domain.
pub struct Pd {
    raw: NonNull<ibv_pd>,
    ctx: Arc<Context>,
}

// SAFETY: ibv_pd is thread-safe.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl Pd {
    /// Allocates a protection domain.
    ///
    /// # Errors
    /// `Os` (ENOMEM: out of device resources).
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Pd>, VerbsError> {
        // SAFETY: valid context.
        let raw = unsafe { ibv_alloc_pd(ctx.raw.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| errno_error("ibv_alloc_pd", &ctx.name))?;
        Ok(Arc::new(Pd {
            raw,
            ctx: ctx.clone(),
        }))
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: MRs and QPs hold an Arc to the PD, so none is alive here.
        unsafe { ibv_dealloc_pd(self.raw.as_ptr()) };
    }
}

/// A registered memory region over memory the caller keeps alive.
pub struct Mr {
    raw: NonNull<ibv_mr>,
    _pd: Arc<Pd>,
}

// SAFETY: an ibv_mr is immutable after registration.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

/// Remote write + read + local write: what a follower's log region needs.
pub const ACCESS_REMOTE_RW: u32 = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
    | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
    | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
/// Local write only: staging buffers.
pub const ACCESS_LOCAL: u32 = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;

impl Mr {
    /// Registers `len` bytes at `addr`.
    ///
    /// # Safety
    /// `addr..addr+len` must stay mapped (and not be reused for anything else) until the `Mr` is
    /// dropped: the device may write it at any time while registered.
    ///
    /// # Errors
    /// `MemlockTooLow` on ENOMEM (RLIMIT_MEMLOCK); `Os` with EOPNOTSUPP for memory that cannot be
    /// pinned long-term (fsdax), EFAULT for an unmapped range.
    unsafe fn register(
        pd: &Arc<Pd>,
        addr: *mut u8,
        len: usize,
        access: u32,
    ) -> Result<Mr, VerbsError> {
        let raw = ibv_reg_mr(pd.raw.as_ptr(), addr.cast(), len, access as i32);
        let raw =
            NonNull::new(raw).ok_or_else(|| match errno_error("ibv_reg_mr", &pd.ctx.name) {
                VerbsError::MemlockTooLow { device, .. } => VerbsError::MemlockTooLow {
                    device,
                    len: len as u64,
                },
                e => e,
            })?;
        Ok(Mr {
            raw,
            _pd: pd.clone(),
        })
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is registered and immutable.
        unsafe { self.raw.as_ref().lkey }
    }

    /// Remote key.
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { self.raw.as_ref().rkey }
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        // SAFETY: as above.
        unsafe { self.raw.as_ref().addr as u64 }
    }
}

/// Memory registered with the device, owned together with its registration. Field order drops
/// the MR (deregistration) before the mapping is unmapped, so the device never holds a
/// registration over memory that is gone.
pub struct Registered {
    mr: Mr,
    map: Mapping,
}

impl Registered {
    /// Registers all of `map` with `access`.
    ///
    /// # Errors
    /// As `ibv_reg_mr`: `MemlockTooLow` (ENOMEM), `Os` with EOPNOTSUPP for fsdax pages.
    pub fn new(pd: &Arc<Pd>, map: Mapping, access: u32) -> Result<Registered, VerbsError> {
        // SAFETY: `map` moves into the value that owns the MR and is unmapped only after the MR
        // is deregistered (field order), so the registered range stays mapped while registered.
        let mr = unsafe { Mr::register(pd, map.as_ptr(), map.len(), access)? };
        Ok(Registered { mr, map })
    }

    /// The registration (keys, address).
    pub fn mr(&self) -> &Mr {
        &self.mr
    }

    /// The memory.
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    fn local(&self, offset: usize, len: usize) -> Local {
        assert!(
            offset.checked_add(len).is_some_and(|e| e <= self.map.len()),
            "invariant: local range inside its registration"
        );
        Local {
            addr: self.mr.addr() + offset as u64,
            len: len as u32,
            lkey: self.mr.lkey(),
        }
    }
}

/// Where a write's payload comes from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Copied into the work request during the post (at most the QP's `max_inline` bytes).
    Inline(&'a [u8]),
    /// `len` bytes at `offset` of a registered buffer. Changing them before the write completes
    /// changes what is sent (a logic error, not a memory error: the registration keeps the
    /// memory mapped, and a dropped registration fails the request instead).
    Registered(&'a Registered, usize, usize),
    /// No payload (a zero-length write: completes after every earlier one).
    Nothing,
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered by us, deregistered once.
        unsafe { ibv_dereg_mr(self.raw.as_ptr()) };
    }
}

/// Most completions one `Cq::poll` takes (callers size their completion lists by it).
pub const COMPLETIONS_PER_POLL: usize = 16;

/// A completion queue.
pub struct Cq {
    raw: NonNull<ibv_cq>,
    _ctx: Arc<Context>,
}

// SAFETY: ibv_cq polling is thread-safe.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

/// One work completion, copied out of the CQ.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// The work request's id.
    pub wr_id: u64,
    /// IBV_WC_SUCCESS or an error status.
    pub status: ibv_wc_status::Type,
    /// What completed.
    pub opcode: ibv_wc_opcode::Type,
    /// The QP it belongs to.
    pub qp_num: u32,
    /// Immediate data (host order) when the opcode is RECV_RDMA_WITH_IMM.
    pub imm: Option<u32>,
}

impl Completion {
    /// libibverbs' text for the status.
    pub fn status_text(&self) -> String {
        // SAFETY: ibv_wc_status_str returns a static string for any value.
        unsafe { CStr::from_ptr(ibv_wc_status_str(self.status)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Cq {
    /// Creates a CQ with room for `entries` completions.
    ///
    /// # Errors
    /// `Os` (EINVAL: more entries than the device's max_cqe; ENOMEM).
    pub fn new(ctx: &Arc<Context>, entries: i32) -> Result<Arc<Cq>, VerbsError> {
        // SAFETY: valid context; no channel, no completion vector.
        let raw = unsafe {
            ibv_create_cq(
                ctx.raw.as_ptr(),
                entries,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| errno_error("ibv_create_cq", &ctx.name))?;
        Ok(Arc::new(Cq {
            raw,
            _ctx: ctx.clone(),
        }))
    }

    /// Appends up to 16 completions to `out`; never blocks.
    ///
    /// # Errors
    /// `Os` when the CQ is broken (overrun).
    pub fn poll(&self, out: &mut Vec<Completion>) -> Result<usize, VerbsError> {
        // SAFETY: ibv_wc is plain data; zero is valid.
        let mut wcs: [ibv_wc; COMPLETIONS_PER_POLL] = unsafe { std::mem::zeroed() };
        // SAFETY: valid CQ, array of COMPLETIONS_PER_POLL entries.
        let n = unsafe { ibv_poll_cq(self.raw.as_ptr(), COMPLETIONS_PER_POLL as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(errno_error("ibv_poll_cq", "completion queue"));
        }
        for wc in &wcs[..n as usize] {
            let with_imm = wc.wc_flags & ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0;
            // SAFETY: the union holds imm_data when IBV_WC_WITH_IMM is set; read only then.
            let imm = with_imm
                .then(|| u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data }));
            out.push(Completion {
                wr_id: wc.wr_id,
                status: wc.status,
                opcode: wc.opcode,
                qp_num: wc.qp_num,
                imm,
            });
        }
        Ok(n as usize)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: QPs hold an Arc to their CQ, so none is alive here.
        unsafe { ibv_destroy_cq(self.raw.as_ptr()) };
    }
}

/// What one side tells the other to connect an RC queue pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpEndpoint {
    /// Queue pair number.
    pub qpn: u32,
    /// Initial packet sequence number.
    pub psn: u32,
    /// Port LID (0 on RoCE).
    pub lid: u16,
    /// GID (RoCE v2 address).
    pub gid: [u8; 16],
}

/// A reliable-connected queue pair.
pub struct Qp {
    raw: NonNull<ibv_qp>,
    ctx: Arc<Context>,
    _pd: Arc<Pd>,
    _cq: Arc<Cq>,
    /// Largest payload that may be posted inline.
    pub max_inline: u32,
}

// SAFETY: posting to a QP is thread-safe in libibverbs.
unsafe impl Send for Qp {}
// SAFETY: as above.
unsafe impl Sync for Qp {}

/// One scatter entry of a local registered buffer.
#[derive(Clone, Copy, Debug)]
struct Local {
    addr: u64,
    len: u32,
    lkey: u32,
}

impl Qp {
    /// Creates an RC QP on `pd` whose send and receive completions go to `cq`.
    ///
    /// # Errors
    /// `Os` (EINVAL: capabilities beyond the device's; ENOMEM).
    pub fn new(
        pd: &Arc<Pd>,
        cq: &Arc<Cq>,
        max_send_wr: u32,
        max_recv_wr: u32,
        max_inline: u32,
    ) -> Result<Qp, VerbsError> {
        // SAFETY: plain data; zero is valid for the unset fields.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq.raw.as_ptr();
        init.recv_cq = cq.raw.as_ptr();
        init.cap = ibv_qp_cap {
            max_send_wr,
            max_recv_wr,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: max_inline,
        };
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        // SAFETY: valid PD and CQ; init is fully initialised.
        let raw = unsafe { ibv_create_qp(pd.raw.as_ptr(), &mut init) };
        let raw = NonNull::new(raw).ok_or_else(|| errno_error("ibv_create_qp", &pd.ctx.name))?;
        Ok(Qp {
            raw,
            ctx: pd.ctx.clone(),
            _pd: pd.clone(),
            _cq: cq.clone(),
            max_inline: init.cap.max_inline_data,
        })
    }

    /// This QP's number.
    pub fn qpn(&self) -> u32 {
        // SAFETY: created QP; qp_num is immutable.
        unsafe { self.raw.as_ref().qp_num }
    }

    fn modify(
        &self,
        attr: &mut ibv_qp_attr,
        mask: u32,
        what: &'static str,
    ) -> Result<(), VerbsError> {
        // SAFETY: valid QP; attr initialised for the fields in mask.
        let rc = unsafe { ibv_modify_qp(self.raw.as_ptr(), attr, mask as i32) };
        if rc != 0 {
            // ibv_modify_qp returns the errno instead of setting it.
            return Err(VerbsError::Os {
                op: what,
                resource: self.ctx.name.clone(),
                source: io::Error::from_raw_os_error(rc),
                hint: "",
            });
        }
        Ok(())
    }

    /// RESET -> INIT -> RTR -> RTS toward `remote`, with the given remote access flags.
    ///
    /// # Errors
    /// `Os` from ibv_modify_qp (EINVAL: bad GID index or MTU, or a transition out of order).
    pub fn connect(
        &self,
        local_psn: u32,
        remote: &QpEndpoint,
        gid_index: u8,
        mtu: ibv_mtu::Type,
        access: u32,
    ) -> Result<(), VerbsError> {
        use ibv_qp_attr_mask as m;
        // SAFETY: plain data; zero is valid.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = PORT;
        a.qp_access_flags = access;
        self.modify(
            &mut a,
            (m::IBV_QP_STATE | m::IBV_QP_PKEY_INDEX | m::IBV_QP_PORT | m::IBV_QP_ACCESS_FLAGS).0,
            "ibv_modify_qp(INIT)",
        )?;

        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = mtu;
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = 1;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.dlid = remote.lid;
        a.ah_attr.port_num = PORT;
        a.ah_attr.grh.dgid.raw = remote.gid;
        a.ah_attr.grh.sgid_index = gid_index;
        a.ah_attr.grh.hop_limit = 1;
        let rtr = m::IBV_QP_STATE
            | m::IBV_QP_AV
            | m::IBV_QP_PATH_MTU
            | m::IBV_QP_DEST_QPN
            | m::IBV_QP_RQ_PSN
            | m::IBV_QP_MAX_DEST_RD_ATOMIC
            | m::IBV_QP_MIN_RNR_TIMER;
        self.modify(&mut a, rtr.0, "ibv_modify_qp(RTR)")?;

        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.sq_psn = local_psn;
        a.timeout = 14; // 4.096 us * 2^14 = 67 ms per try
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.max_rd_atomic = 1;
        let rts = m::IBV_QP_STATE
            | m::IBV_QP_SQ_PSN
            | m::IBV_QP_TIMEOUT
            | m::IBV_QP_RETRY_CNT
            | m::IBV_QP_RNR_RETRY
            | m::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(&mut a, rts.0, "ibv_modify_qp(RTS)")
    }

    /// Changes the remote access this QP grants its peer (RTS -> RTS): Mu-style fencing.
    ///
    /// # Errors
    /// `Os` from ibv_modify_qp (EINVAL if the device does not allow the change in RTS).
    pub fn set_access(&self, access: u32) -> Result<(), VerbsError> {
        // SAFETY: plain data; zero is valid.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_access_flags = access;
        self.modify(
            &mut a,
            ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS.0,
            "ibv_modify_qp(ACCESS_FLAGS)",
        )
    }

    /// Moves the QP to the error state: every outstanding and later request fails.
    ///
    /// # Errors
    /// `Os` from ibv_modify_qp.
    pub fn break_connection(&self) -> Result<(), VerbsError> {
        // SAFETY: plain data; zero is valid.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_ERR;
        self.modify(
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE.0,
            "ibv_modify_qp(ERR)",
        )
    }

    /// Posts an RDMA WRITE (WRITE_WITH_IMM when `imm` is set) of `src` to `remote_addr`/`rkey`,
    /// asking for a completion when `signaled`.
    ///
    /// # Errors
    /// `Os` from ibv_post_send (ENOMEM: send queue full; EINVAL: inline payload too large).
    pub fn post_write(
        &self,
        wr_id: u64,
        src: Source<'_>,
        remote_addr: u64,
        rkey: u32,
        imm: Option<u32>,
        signaled: bool,
    ) -> Result<(), VerbsError> {
        let opcode = if imm.is_some() {
            ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
        } else {
            ibv_wr_opcode::IBV_WR_RDMA_WRITE
        };
        let (local, inline) = match src {
            Source::Inline(bytes) => (
                Local {
                    addr: bytes.as_ptr() as u64,
                    len: bytes.len() as u32,
                    lkey: 0,
                },
                true,
            ),
            Source::Registered(reg, offset, len) => (reg.local(offset, len), false),
            Source::Nothing => (
                Local {
                    addr: 0,
                    len: 0,
                    lkey: 0,
                },
                false,
            ),
        };
        // SAFETY: inline bytes are copied during the call; registered memory stays mapped while
        // registered (see `Registered`); a zero-length write touches no local memory.
        unsafe {
            self.post(
                wr_id,
                opcode,
                local,
                remote_addr,
                rkey,
                imm,
                signaled,
                inline,
            )
        }
    }

    /// Posts a signaled RDMA READ of `len` bytes from `remote_addr` into `into` at `offset`.
    ///
    /// # Errors
    /// As `post_write`.
    pub fn post_read(
        &self,
        wr_id: u64,
        into: &Registered,
        offset: usize,
        len: usize,
        remote_addr: u64,
        rkey: u32,
    ) -> Result<(), VerbsError> {
        let local = into.local(offset, len);
        // SAFETY: the target is registered memory (see `Registered`); the device writes only
        // inside the registered range.
        unsafe {
            self.post(
                wr_id,
                ibv_wr_opcode::IBV_WR_RDMA_READ,
                local,
                remote_addr,
                rkey,
                None,
                true,
                false,
            )
        }
    }

    /// # Safety
    /// `local` must name memory that stays valid for the device until the request completes
    /// (registered memory, or bytes copied because `inline`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn post(
        &self,
        wr_id: u64,
        opcode: ibv_wr_opcode::Type,
        local: Local,
        remote_addr: u64,
        rkey: u32,
        imm: Option<u32>,
        signaled: bool,
        inline: bool,
    ) -> Result<(), VerbsError> {
        let mut sge = ibv_sge {
            addr: local.addr,
            length: local.len,
            lkey: local.lkey,
        };
        let mut wr: ibv_send_wr = std::mem::zeroed();
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = i32::from(local.len > 0);
        wr.opcode = opcode;
        let mut send_flags = 0;
        if signaled {
            send_flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if inline {
            send_flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        wr.send_flags = send_flags;
        if let Some(imm) = imm {
            wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
        }
        wr.wr.rdma.remote_addr = remote_addr;
        wr.wr.rdma.rkey = rkey;
        let mut bad = ptr::null_mut();
        let rc = ibv_post_send(self.raw.as_ptr(), &mut wr, &mut bad);
        if rc != 0 {
            let hint = if rc == libc::ENOMEM {
                ": send queue full (poll completions first)"
            } else {
                ""
            };
            return Err(VerbsError::Os {
                op: "ibv_post_send",
                resource: self.ctx.name.clone(),
                source: io::Error::from_raw_os_error(rc),
                hint,
            });
        }
        Ok(())
    }

    /// Posts an empty receive, consumed by the peer's WRITE_WITH_IMM.
    ///
    /// # Errors
    /// `Os` from ibv_post_recv (ENOMEM: receive queue full).
    pub fn post_recv(&self, wr_id: u64) -> Result<(), VerbsError> {
        // SAFETY: plain data; a receive with no scatter entries needs no memory.
        let mut wr: ibv_recv_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        let mut bad = ptr::null_mut();
        // SAFETY: valid QP, wr lives across the call.
        let rc = unsafe { ibv_post_recv(self.raw.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(VerbsError::Os {
                op: "ibv_post_recv",
                resource: self.ctx.name.clone(),
                source: io::Error::from_raw_os_error(rc),
                hint: "",
            });
        }
        Ok(())
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        unsafe { ibv_destroy_qp(self.raw.as_ptr()) };
    }
}
