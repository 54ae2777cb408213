//! Thin safe layer over `flowgate-dpdk-sys`: EAL start-up, mbuf pools, owned mbufs, bursts of
//! 32 for the hot path, and ethdev port set-up (queues, RSS, start/stop, stats, vdev attach).
//!
//! This module and `flowgate-dpdk-sys` are the only places in the workspace with `unsafe`; every
//! block says why it is sound. The rules the safe API enforces:
//!
//! - The EAL starts once per process ([`Eal::init`]); everything else checks it has started.
//! - Mempools live until the process exits (they are never freed), so an [`Mbuf`] or a queue can
//!   never outlive the pool it draws from. [`Mempool`] is a copyable handle.
//! - An [`Mbuf`] and a [`Burst`] own their mbufs and free them on drop.
//! - A queue is polled by one thread at a time: [`Port::rx_queue`] / [`Port::tx_queue`] hand out
//!   an exclusive [`RxQueue`] / [`TxQueue`] that borrows the started [`Port`], so the port cannot
//!   be stopped or closed while a queue is in use.
//! - A device with fewer TX queues than threads sending on it: [`Port::shared_tx_queue`] hands
//!   out one [`TxQueue`] per thread on the same queue; such a queue takes the queue's spin lock
//!   around every `rte_eth_tx_burst` and counts its bursts and contended lock takes
//!   ([`Port::tx_sharing`]). An exclusive queue takes no lock and touches no atomic.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_char;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use flowgate_dpdk_sys as sys;

/// Mbufs moved by one rx/tx burst.
pub const BURST_SIZE: usize = sys::BURST_SIZE;

/// Default data room of a packet mbuf (2048 bytes + headroom).
pub const DEFAULT_DATA_ROOM: u16 = sys::FG_MBUF_DEFAULT_BUF_SIZE as u16;

/// `SOCKET_ID_ANY`: let DPDK pick the NUMA socket.
pub const SOCKET_ANY: i32 = -1;

/// Errors from the DPDK layer.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// [`Eal::init`] was called a second time in this process.
    #[error("the DPDK EAL is already initialised in this process (it can start only once)")]
    AlreadyInitialised,
    /// A DPDK call was made before [`Eal::init`].
    #[error("the DPDK EAL is not initialised: call Eal::init first")]
    NotInitialised,
    /// An argument contained an interior NUL byte or was otherwise unusable.
    #[error("invalid argument {what}: {why}")]
    InvalidArgument {
        /// Which argument.
        what: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A DPDK function failed.
    #[error("{op} failed: {message} (errno {errno})")]
    Call {
        /// The DPDK function or operation.
        op: String,
        /// Positive errno value.
        errno: i32,
        /// `rte_strerror(errno)`.
        message: String,
    },
    /// No ethdev port with that name.
    #[error("no DPDK port named {0:?}")]
    NoSuchPort(String),
    /// Another live [`Port`] already manages this port id.
    #[error("port {0} is already configured by another Port handle")]
    PortInUse(u16),
    /// The queue is already handed out, or out of range.
    #[error("port {port} {dir} queue {queue} is not available: {why}")]
    Queue {
        /// Port id.
        port: u16,
        /// "rx" or "tx".
        dir: &'static str,
        /// Queue index.
        queue: u16,
        /// Why.
        why: &'static str,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, DpdkError>;

/// The message DPDK gives for an errno value.
fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a static or thread-local
    // NUL-terminated string, valid at least until the next call on this thread; we copy it.
    let msg = unsafe { CStr::from_ptr(sys::rte_strerror(errno)) };
    msg.to_string_lossy().into_owned()
}

/// Current `rte_errno` of this thread.
fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int; no preconditions.
    unsafe { sys::fg_errno() }
}

/// Error for a DPDK call that returned a negative errno (`ret < 0`) or set `rte_errno`.
/// The error of a DPDK call that returned `ret`: a negative errno, or (`ret >= 0`, for the
/// calls that return -1 or NULL) the thread's `rte_errno`.
fn call_error(op: impl Into<String>, ret: i32) -> DpdkError {
    let errno = if ret < 0 { -ret } else { rte_errno() };
    DpdkError::Call {
        op: op.into(),
        errno,
        message: strerror(errno),
    }
}

/// Turns a DPDK `int` return (0 ok, negative errno) into a `Result`.
fn check(op: &str, ret: i32) -> Result<()> {
    if ret < 0 {
        Err(call_error(op, ret))
    } else {
        Ok(())
    }
}

fn cstring(what: &str, value: &str) -> Result<CString> {
    CString::new(value).map_err(|_| DpdkError::InvalidArgument {
        what: format!("{what} {value:?}"),
        why: "contains a NUL byte",
    })
}

static EAL_STARTED: AtomicBool = AtomicBool::new(false);
static EAL_READY: AtomicBool = AtomicBool::new(false);

fn ensure_eal() -> Result<()> {
    if EAL_READY.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(DpdkError::NotInitialised)
    }
}

/// Proof that the DPDK Environment Abstraction Layer is running in this process.
///
/// The EAL cannot be restarted: it is never cleaned up, it ends with the process.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Starts the EAL with these arguments (without the program name, which is added).
    ///
    /// Typical arguments without NICs or hugepages:
    /// `--no-huge -m 256 --no-pci --no-shconf --vdev=net_ring0`. Poll-mode drivers of the
    /// shared DPDK build are loaded from DPDK's driver directory automatically.
    ///
    /// Fails with [`DpdkError::AlreadyInitialised`] on a second call, even if the first failed
    /// (DPDK itself refuses a second `rte_eal_init`).
    pub fn init(args: &[String]) -> Result<Eal> {
        if EAL_STARTED.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::AlreadyInitialised);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(cstring("EAL argument", "flowgate")?);
        for arg in args {
            owned.push(cstring("EAL argument", arg)?);
        }
        // rte_eal_init may permute argv; give it a private array of pointers.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
        argv.push(ptr::null_mut());
        let argc = i32::try_from(owned.len()).map_err(|_| DpdkError::InvalidArgument {
            what: "EAL arguments".into(),
            why: "too many",
        })?;
        // SAFETY: argv holds argc valid NUL-terminated strings (kept alive by `owned` for the
        // call) plus a terminating NULL; the EAL only reads/permutes the pointer array, and the
        // EAL_STARTED guard ensures this runs at most once per process.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            // rte_eal_init returns -1 and says why in rte_errno
            return Err(call_error("rte_eal_init", 0));
        }
        // The EAL keeps pointers into argv (e.g. for --vdev devargs): leak them deliberately.
        std::mem::forget(owned);
        std::mem::forget(argv);
        EAL_READY.store(true, Ordering::Release);
        Ok(Eal { _private: () })
    }

    /// Whether the EAL has been initialised in this process.
    pub fn is_initialised() -> bool {
        EAL_READY.load(Ordering::Acquire)
    }

    /// Number of lcores the EAL was started with.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: the EAL is initialised (self exists); reads global config.
        unsafe { sys::rte_lcore_count() }
    }

    /// The main lcore id.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: the EAL is initialised (self exists); reads global config.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// All enabled lcore ids, main first.
    pub fn lcore_ids(&self) -> Vec<u32> {
        let mut ids = vec![self.main_lcore()];
        // SAFETY: the EAL is initialised; u32::MAX (-1) starts the iteration as
        // RTE_LCORE_FOREACH_WORKER does; skip_main=1, wrap=0.
        let mut id = unsafe { sys::rte_get_next_lcore(u32::MAX, 1, 0) };
        while id < sys::FG_MAX_LCORE as u32 {
            ids.push(id);
            // SAFETY: as above, continuing from a valid lcore id.
            id = unsafe { sys::rte_get_next_lcore(id, 1, 0) };
        }
        ids
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: the EAL is initialised; reads a global set at init.
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// Registers the calling (non-EAL) thread with the EAL, giving it an lcore id so that
    /// mempool per-lcore caches work for it. Returns the lcore id. Call
    /// [`Eal::unregister_thread`] before the thread ends to give the lcore back.
    pub fn register_thread(&self) -> Result<u32> {
        // SAFETY: the EAL is initialised; registers the current thread only.
        let ret = unsafe { sys::rte_thread_register() };
        if ret < 0 {
            return Err(call_error("rte_thread_register", -1));
        }
        Ok(lcore_id().unwrap_or(u32::MAX))
    }

    /// Releases the calling thread's lcore id (no-op for unregistered threads).
    pub fn unregister_thread(&self) {
        // SAFETY: the EAL is initialised; affects the current thread only.
        unsafe { sys::rte_thread_unregister() }
    }
}

/// The calling thread's lcore id, or `None` for a thread the EAL does not know.
pub fn lcore_id() -> Option<u32> {
    // SAFETY: reads a thread-local variable; valid on any thread.
    let id = unsafe { sys::fg_lcore_id() };
    (id != u32::MAX).then_some(id)
}

/// Current TSC value (`rte_get_tsc_cycles`).
#[inline]
pub fn tsc_cycles() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter; no memory effects.
    unsafe { sys::fg_get_tsc_cycles() }
}

/// Hint the CPU to bring the cache line holding `*r` into all cache levels (`rte_prefetch0`,
/// inlined: the C shim `fg_prefetch0` would cost a call). A hint only: no effect on what the
/// program computes. A no-op on targets other than x86_64.
///
/// Every cache line `*r` spans is prefetched (two for a 72-byte connection that straddles a
/// line boundary).
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    let p = (r as *const T).cast::<u8>();
    let size = std::mem::size_of::<T>().max(1);
    let first = p as usize & !63;
    let last = (p as usize + size - 1) & !63;
    let mut line = first;
    while line <= last {
        // `wrapping_sub`/`wrapping_add` keep the pointer's provenance; the address itself
        // is all a prefetch uses.
        prefetch_line(
            p.wrapping_sub(p as usize - first)
                .wrapping_add(line - first),
        );
        line += 64;
    }
}

#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the x86_64
    // baseline the compiler targets). A prefetch is a hint: it never faults, whatever the
    // address, and never changes memory or program state.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A pool of packet mbufs. Pools are never freed: the handle is `Copy` and valid for the
/// life of the process.
#[derive(Clone, Copy)]
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe (the default flags we
// create pools with), and the pool is never freed, so the pointer may be shared across threads.
unsafe impl Send for Mempool {}
// SAFETY: as for Send: all operations through &Mempool are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mempool")
            .field("raw", &self.raw)
            .field("available", &self.available())
            .finish()
    }
}

impl Mempool {
    /// Creates a packet mbuf pool (`rte_pktmbuf_pool_create`) of `n_mbufs` mbufs with a
    /// per-lcore cache of `cache` and `data_room` bytes each (headroom included; see
    /// [`DEFAULT_DATA_ROOM`]) on NUMA `socket` ([`SOCKET_ANY`] for any).
    pub fn new(name: &str, n_mbufs: u32, cache: u32, data_room: u16, socket: i32) -> Result<Self> {
        ensure_eal()?;
        let cname = cstring("mempool name", name)?;
        // SAFETY: the EAL is initialised; cname is a valid C string for the call (DPDK copies
        // the name); the other arguments are plain values validated by DPDK.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), n_mbufs, cache, 0, data_room, socket)
        };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| call_error(format!("rte_pktmbuf_pool_create({name})"), -rte_errno()))
    }

    /// The raw pool pointer (for FFI).
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// Mbufs currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid for the process lifetime; the count is a racy snapshot.
        unsafe { sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently allocated from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for `available`.
        unsafe { sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Allocates one mbuf (reset, empty), or `None` if the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid; alloc returns an owned mbuf or NULL.
        let raw = unsafe { sys::fg_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(raw).map(|raw| Mbuf { raw })
    }
}

/// An owned packet mbuf; dropping it returns it to its pool.
///
/// Data accessors see the first segment (flowgate pools use single-segment mbufs).
pub struct Mbuf {
    raw: NonNull<sys::rte_mbuf>,
}

// SAFETY: an Mbuf is exclusively owned; freeing it from another thread is allowed (mempool put
// is thread-safe), and DPDK has no thread affinity for mbufs.
unsafe impl Send for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("raw", &self.raw)
            .field("pkt_len", &self.pkt_len())
            .finish()
    }
}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf from a live pool, owned by the caller (refcount held), and not
    /// used through any other pointer afterwards.
    pub unsafe fn from_raw(raw: NonNull<sys::rte_mbuf>) -> Self {
        Mbuf { raw }
    }

    /// Gives up ownership without freeing.
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    /// The raw pointer, still owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.raw.as_ptr()
    }

    /// The mbuf's header fields (read in Rust: the struct's layout is bindgen's, checked at
    /// compile time against DPDK's header, so the hot path makes no call for them).
    #[inline(always)]
    fn hdr(&self) -> &sys::rte_mbuf {
        // SAFETY: self owns a valid mbuf; the header is only read through this reference
        // while `&self` is held (mutation goes through `&mut self` and the shim).
        unsafe { self.raw.as_ref() }
    }

    /// Bytes in the first segment.
    #[inline]
    pub fn data_len(&self) -> usize {
        usize::from(self.hdr().data_len)
    }

    /// Bytes in the whole packet (all segments).
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.hdr().pkt_len as usize
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.pkt_len() == 0
    }

    /// Input port recorded by the PMD.
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// RSS hash recorded by the PMD (0 if none).
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: self owns a valid mbuf.
        unsafe { sys::fg_pktmbuf_rss_hash(self.raw.as_ptr()) }
    }

    /// Current reference count.
    pub fn refcnt(&self) -> u16 {
        // SAFETY: self owns a valid mbuf.
        unsafe { sys::fg_mbuf_refcnt_read(self.raw.as_ptr()) }
    }

    /// Free space before the data.
    pub fn headroom(&self) -> usize {
        usize::from(self.hdr().data_off)
    }

    /// Free space after the data (last segment).
    pub fn tailroom(&self) -> usize {
        // SAFETY: self owns a valid mbuf.
        usize::from(unsafe { sys::fg_pktmbuf_tailroom(self.raw.as_ptr()) })
    }

    /// Packet data of the first segment.
    pub fn data(&self) -> &[u8] {
        // SAFETY: self owns a valid mbuf; the first data_len bytes at mtod are initialised
        // packet data inside the mbuf buffer and stay valid while self is borrowed.
        unsafe { mbuf_data(self.raw.as_ptr()) }
    }

    /// Mutable packet data of the first segment.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `data`; &mut self gives exclusive access to the buffer.
        unsafe { mbuf_data_mut(self.raw.as_ptr()) }
    }

    /// Grows the packet at the end by `len` bytes and returns them, or `None` if the tailroom
    /// is too small.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: self owns a valid mbuf; append returns NULL or a pointer to `len` bytes of
        // the buffer now counted in data_len, exclusively ours through &mut self.
        unsafe {
            let p = sys::fg_pktmbuf_append(self.raw.as_ptr(), len);
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p.cast::<u8>(), len.into()))
        }
    }

    /// Grows the packet at the front by `len` bytes and returns them, or `None` if the
    /// headroom is too small.
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: as for `append`, at the front of the data.
        unsafe {
            let p = sys::fg_pktmbuf_prepend(self.raw.as_ptr(), len);
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p.cast::<u8>(), len.into()))
        }
    }

    /// Removes `len` bytes from the front; false if the first segment is shorter.
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: self owns a valid mbuf; adj checks the length itself.
        !unsafe { sys::fg_pktmbuf_adj(self.raw.as_ptr(), len) }.is_null()
    }

    /// Removes `len` bytes from the end; false if the last segment is shorter.
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: self owns a valid mbuf; trim checks the length itself.
        unsafe { sys::fg_pktmbuf_trim(self.raw.as_ptr(), len) == 0 }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf and nobody uses it afterwards.
        unsafe { sys::fg_pktmbuf_free(self.raw.as_ptr()) }
    }
}

/// # Safety
/// `m` must be a valid mbuf not mutated for the lifetime `'a`.
#[inline(always)]
unsafe fn mbuf_data<'a>(m: *mut sys::rte_mbuf) -> &'a [u8] {
    // SAFETY: caller guarantees m is valid; buf_addr + data_off (rte_pktmbuf_mtod) and
    // data_len bytes from there lie inside the mbuf's data buffer, which does not overlap the
    // header read here.
    unsafe {
        let (addr, off, len) = ((*m).buf_addr, (*m).data_off, (*m).data_len);
        std::slice::from_raw_parts(addr.cast::<u8>().add(usize::from(off)), usize::from(len))
    }
}

/// # Safety
/// `m` must be a valid mbuf exclusively borrowed for the lifetime `'a`.
#[inline(always)]
unsafe fn mbuf_data_mut<'a>(m: *mut sys::rte_mbuf) -> &'a mut [u8] {
    // SAFETY: caller guarantees m is valid and exclusive; as in `mbuf_data`, the data lies in
    // the buffer, apart from the header fields read here.
    unsafe {
        let (addr, off, len) = ((*m).buf_addr, (*m).data_off, (*m).data_len);
        std::slice::from_raw_parts_mut(addr.cast::<u8>().add(usize::from(off)), usize::from(len))
    }
}

/// Up to [`BURST_SIZE`] owned mbufs in a fixed array: the hot path's unit of work, with no
/// allocation. Dropping a burst frees the mbufs it still holds.
pub struct Burst {
    pkts: [*mut sys::rte_mbuf; BURST_SIZE],
    len: usize,
}

// SAFETY: a Burst exclusively owns the mbufs in pkts[..len] (same reasoning as Mbuf: Send).
unsafe impl Send for Burst {}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    /// An empty burst.
    pub const fn new() -> Self {
        Burst {
            pkts: [ptr::null_mut(); BURST_SIZE],
            len: 0,
        }
    }

    /// Number of mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the burst holds no mbuf.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the burst is full.
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Receives into the free slots from `queue`; returns how many arrived.
    #[inline]
    pub fn rx(&mut self, queue: &mut RxQueue<'_>) -> usize {
        let room = BURST_SIZE - self.len;
        // SAFETY: the queue token proves the port is started and the queue configured and
        // polled by this thread only; pkts[len..] has `room` writable slots; the PMD writes at
        // most `room` owned mbuf pointers there. room <= 32 fits u16.
        let n = unsafe {
            sys::fg_eth_rx_burst(
                queue.port,
                queue.queue,
                self.pkts.as_mut_ptr().add(self.len),
                room as u16,
            )
        };
        self.len += usize::from(n);
        usize::from(n)
    }

    /// Transmits on `queue`; returns how many were sent. Unsent mbufs stay in the burst (moved
    /// to the front) for a retry or [`Burst::clear`]. On a shared queue the burst is sent
    /// under the queue's lock (an empty burst is not sent at all).
    #[inline]
    pub fn tx(&mut self, queue: &mut TxQueue<'_>) -> usize {
        let sent = match queue.shared {
            None => {
                // SAFETY: the exclusive queue token proves the port is started and the queue
                // configured and used by this thread only; pkts[..len] are owned valid mbufs
                // whose ownership passes to the PMD for the first `sent` of them.
                usize::from(unsafe {
                    sys::fg_eth_tx_burst(
                        queue.port,
                        queue.queue,
                        self.pkts.as_mut_ptr(),
                        self.len as u16,
                    )
                })
            }
            Some(_) if self.len == 0 => 0,
            Some(lane) => {
                let contended = lane.lock();
                // SAFETY: the shared queue token proves the port is started and the queue
                // configured; every holder of this queue sends only while holding the lane's
                // lock (taken just above, released below), so the PMD's queue is used by one
                // thread at a time as rte_eth_tx_burst requires; pkts[..len] are owned valid
                // mbufs whose ownership passes to the PMD for the first `sent` of them.
                let sent = unsafe {
                    sys::fg_eth_tx_burst(
                        queue.port,
                        queue.queue,
                        self.pkts.as_mut_ptr(),
                        self.len as u16,
                    )
                };
                lane.unlock(contended);
                usize::from(sent)
            }
        };
        self.pkts.copy_within(sent..self.len, 0);
        self.len -= sent;
        sent
    }

    /// Transmits on `queue` and frees whatever the queue did not take; returns how many
    /// were sent.
    #[inline]
    pub fn tx_or_free(&mut self, queue: &mut TxQueue<'_>) -> usize {
        let sent = self.tx(queue);
        self.clear();
        sent
    }

    /// Frees all held mbufs.
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: pkts[..len] are owned valid mbufs, given back to their pools here and
            // forgotten by setting len to 0.
            unsafe { sys::fg_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Adds an mbuf; gives it back if the burst is full.
    pub fn push(&mut self, mbuf: Mbuf) -> std::result::Result<(), Mbuf> {
        if self.is_full() {
            return Err(mbuf);
        }
        self.pkts[self.len] = mbuf.into_raw().as_ptr();
        self.len += 1;
        Ok(())
    }

    /// Empties the burst in order, handing each mbuf (with its index) to `f`, which takes
    /// ownership: it may push it into another burst or drop it (freeing it).
    #[inline]
    pub fn drain_each(&mut self, mut f: impl FnMut(usize, Mbuf)) {
        let len = self.len;
        // The burst forgets its mbufs first, so a panic in `f` cannot free one twice.
        self.len = 0;
        for i in 0..len {
            if let Some(raw) = NonNull::new(self.pkts[i]) {
                // SAFETY: pkts[..len] were owned valid mbufs of this burst; len is already 0,
                // so each leaves the burst exactly once, into the Mbuf handed to `f`.
                f(i, unsafe { Mbuf::from_raw(raw) });
            }
        }
    }

    /// Bytes of packet data (all segments) held by the burst.
    pub fn bytes(&self) -> u64 {
        self.pkts[..self.len]
            .iter()
            // SAFETY: pkts[..len] are owned valid mbufs.
            .map(|&m| u64::from(unsafe { (*m).pkt_len }))
            .sum()
    }

    /// Removes the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf> {
        let last = self.len.checked_sub(1)?;
        self.len = last;
        // SAFETY: pkts[last] was an owned valid mbuf; it leaves the burst here.
        NonNull::new(self.pkts[last]).map(|raw| unsafe { Mbuf::from_raw(raw) })
    }

    /// Packet data of mbuf `i` (first segment), if `i < len`.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        // SAFETY: pkts[..len] are owned valid mbufs; &self prevents mutation.
        (i < self.len).then(|| unsafe { mbuf_data(self.pkts[i]) })
    }

    /// Mutable packet data of mbuf `i` (first segment), if `i < len`.
    pub fn packet_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        // SAFETY: pkts[..len] are owned valid mbufs; &mut self gives exclusive access.
        (i < self.len).then(|| unsafe { mbuf_data_mut(self.pkts[i]) })
    }

    /// Grows mbuf `i` at the front by `len` bytes (from its headroom) and returns its whole
    /// new data (first segment), or `None` if `i >= len` or the headroom is too small.
    pub fn prepend(&mut self, i: usize, len: u16) -> Option<&mut [u8]> {
        if i >= self.len {
            return None;
        }
        let m = self.pkts[i];
        // SAFETY: pkts[..len] are owned valid mbufs; &mut self gives exclusive access.
        // rte_pktmbuf_prepend checks the headroom itself and returns NULL (changing nothing)
        // when it is too small; on success the first segment's data starts `len` bytes
        // earlier, inside the mbuf's buffer, so the data slice made afterwards is valid.
        unsafe {
            if sys::fg_pktmbuf_prepend(m, len).is_null() {
                return None;
            }
            Some(mbuf_data_mut(m))
        }
    }

    /// Removes `len` bytes from the end of mbuf `i`; false if `i >= len` or the last segment
    /// is shorter.
    pub fn trim(&mut self, i: usize, len: u16) -> bool {
        // SAFETY: pkts[..len] are owned valid mbufs; &mut self gives exclusive access; trim
        // checks the length itself.
        i < self.len && unsafe { sys::fg_pktmbuf_trim(self.pkts[i], len) == 0 }
    }

    /// Iterates over the packet data of every held mbuf.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        // SAFETY: pkts[..len] are owned valid mbufs; &self prevents mutation.
        self.pkts[..self.len]
            .iter()
            .map(|&m| unsafe { mbuf_data(m) })
    }

    /// Iterates mutably over the packet data of every held mbuf.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut [u8]> + '_ {
        // SAFETY: pkts[..len] are distinct owned valid mbufs (a PMD never returns one twice),
        // so the slices do not alias; &mut self gives exclusive access.
        self.pkts[..self.len]
            .iter()
            .map(|&m| unsafe { mbuf_data_mut(m) })
    }

    /// Keeps the mbufs for which `keep` returns true (in order) and frees the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut [u8]) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            let m = self.pkts[i];
            // SAFETY: m is an owned valid mbuf of this burst, exclusively borrowed here.
            if keep(unsafe { mbuf_data_mut(m) }) {
                self.pkts[kept] = m;
                kept += 1;
            } else {
                // SAFETY: m is owned by the burst and removed from it here.
                unsafe { sys::fg_pktmbuf_free(m) };
            }
        }
        self.len = kept;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Burst {
    /// Receives into the free slots from `reader`'s ring; returns how many arrived.
    #[inline]
    pub fn rx_ring(&mut self, reader: &mut RingReader<'_>) -> usize {
        let room = (BURST_SIZE - self.len) as u32;
        // SAFETY: the reader is the ring's only consumer (single-consumer dequeue); the ring
        // holds owned mbufs put there by `Ring::enqueue`, whose ownership passes to the burst;
        // pkts[len..] has `room` writable slots and at most `room` are written.
        let n = unsafe {
            sys::fg_ring_sc_dequeue_burst(
                reader.ring.raw.as_ptr(),
                self.pkts.as_mut_ptr().add(self.len),
                room,
            )
        } as usize;
        self.len += n;
        n
    }

    /// Sets the application tag of mbuf `i` (the mbuf's `hash.usr`, free once received):
    /// what a worker tells the worker it hands the packet to.
    #[inline]
    pub fn set_tag(&mut self, i: usize, tag: u32) {
        if i < self.len {
            // SAFETY: pkts[i] is an owned valid mbuf; &mut self gives exclusive access.
            unsafe { (*self.pkts[i]).__bindgen_anon_2.hash.usr = tag };
        }
    }

    /// The application tag of mbuf `i` (see [`Burst::set_tag`]).
    #[inline]
    pub fn tag(&self, i: usize) -> Option<u32> {
        // SAFETY: pkts[..len] are owned valid mbufs.
        (i < self.len).then(|| unsafe { (*self.pkts[i]).__bindgen_anon_2.hash.usr })
    }
}

/// A ring of mbufs between threads (DPDK `rte_ring`): any thread may enqueue (multi-producer),
/// one [`RingReader`] dequeues (single consumer). What is left in it when it is dropped is
/// freed.
pub struct Ring {
    raw: NonNull<sys::rte_ring>,
    reader_taken: AtomicBool,
}

// SAFETY: the ring is created multi-producer, so `enqueue` from several threads at once is
// what it is built for; dequeueing needs the single `RingReader` (handed out once) or
// `&mut Ring` (drop); the mbufs inside are owned by the ring, Send as `Mbuf` is.
unsafe impl Send for Ring {}
// SAFETY: as above: every `&self` operation is a multi-producer enqueue or a count.
unsafe impl Sync for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("len", &self.len()).finish()
    }
}

impl Ring {
    /// A ring named `name` (unique in the process) holding up to `size - 1` mbufs; `size` must
    /// be a power of two.
    pub fn new(name: &str, size: u32) -> Result<Ring> {
        ensure_eal()?;
        if !size.is_power_of_two() || size < 2 {
            return Err(DpdkError::InvalidArgument {
                what: format!("ring size {size}"),
                why: "must be a power of two, at least 2",
            });
        }
        let cname = cstring("ring name", name)?;
        // SAFETY: the EAL is initialised; the name is a valid NUL-terminated string that
        // DPDK copies; NULL (with rte_errno) on failure.
        let raw = unsafe { sys::fg_ring_create_mp_sc(cname.as_ptr(), size, SOCKET_ANY) };
        let raw = NonNull::new(raw)
            .ok_or_else(|| call_error(format!("rte_ring_create({name})"), -rte_errno()))?;
        Ok(Ring {
            raw,
            reader_taken: AtomicBool::new(false),
        })
    }

    /// The ring's one consumer; `None` once it was handed out.
    pub fn reader(&self) -> Option<RingReader<'_>> {
        (!self.reader_taken.swap(true, Ordering::AcqRel)).then_some(RingReader { ring: self })
    }

    /// Moves as many mbufs of `burst` as the ring has room for into it, in order; the others
    /// stay in the burst (moved to its front). Returns how many went in. Safe from any thread.
    #[inline]
    pub fn enqueue(&self, burst: &mut Burst) -> usize {
        // SAFETY: multi-producer enqueue on a live ring; pkts[..len] are owned valid mbufs
        // whose ownership passes to the ring for the first `n` of them.
        let n = unsafe {
            sys::fg_ring_mp_enqueue_burst(
                self.raw.as_ptr(),
                burst.pkts.as_mut_ptr(),
                burst.len as u32,
            )
        } as usize;
        burst.pkts.copy_within(n..burst.len, 0);
        burst.len -= n;
        n
    }

    /// Mbufs in the ring now.
    pub fn len(&self) -> usize {
        // SAFETY: reading the ring's indexes is allowed from any thread.
        unsafe { sys::fg_ring_count(self.raw.as_ptr()) as usize }
    }

    /// Whether the ring holds no mbuf now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut reader = RingReader { ring: self };
        let mut burst = Burst::new();
        while burst.rx_ring(&mut reader) > 0 {
            burst.clear();
        }
        // SAFETY: `&mut self`: no reader or producer is left; the ring is empty and freed once.
        unsafe { sys::fg_ring_free(self.raw.as_ptr()) };
    }
}

/// The single consumer of a [`Ring`].
#[derive(Debug)]
pub struct RingReader<'r> {
    ring: &'r Ring,
}

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbps (0 if unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// Basic port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets dropped by the NIC because no descriptor was free.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive failures for lack of mbufs.
    pub rx_nombuf: u64,
    /// Bursts sent through a TX queue shared by several workers (behind its lock); filled by
    /// [`Port::stats`] / [`TxSharing::stats`], 0 from [`port_stats`].
    pub tx_shared_bursts: u64,
    /// Of those, how many found the queue's lock taken by another worker and waited.
    pub tx_lock_contended: u64,
}

/// Number of ethdev ports currently available.
pub fn port_count() -> Result<u16> {
    ensure_eal()?;
    // SAFETY: the EAL is initialised; reads the port table.
    Ok(unsafe { sys::rte_eth_dev_count_avail() })
}

/// The port id of the ethdev named `name` (e.g. `net_ring0`).
pub fn port_by_name(name: &str) -> Result<u16> {
    ensure_eal()?;
    let cname = cstring("port name", name)?;
    let mut port = 0u16;
    // SAFETY: the EAL is initialised; cname is a valid C string and port a valid out pointer.
    let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) };
    if ret < 0 {
        return Err(DpdkError::NoSuchPort(name.to_owned()));
    }
    Ok(port)
}

/// Hot-plugs a virtual device (`rte_dev_probe`), e.g. `net_tap0,iface=fg0` or
/// `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`, and returns its ethdev port id.
pub fn attach_vdev(devargs: &str) -> Result<u16> {
    ensure_eal()?;
    let cargs = cstring("devargs", devargs)?;
    // SAFETY: the EAL is initialised; cargs is a valid C string (DPDK copies it).
    let ret = unsafe { sys::rte_dev_probe(cargs.as_ptr()) };
    check(&format!("rte_dev_probe({devargs})"), ret)?;
    let name = devargs.split(',').next().unwrap_or(devargs);
    port_by_name(name)
}

/// The counters of port `port_id` as the driver keeps them (safe from any thread: the call
/// only reads the driver's statistics).
pub fn port_stats(port_id: u16) -> Result<PortStats> {
    ensure_eal()?;
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: the EAL is initialised; rte_eth_stats_get validates the port id and only writes
    // into `s`, a valid out pointer.
    let ret = unsafe { sys::rte_eth_stats_get(port_id, &mut s) };
    check(&format!("rte_eth_stats_get(port {port_id})"), ret)?;
    Ok(PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
        tx_shared_bursts: 0,
        tx_lock_contended: 0,
    })
}

/// Device limits of port `port_id` before it is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most RX queues the device can be configured with.
    pub max_rx_queues: u16,
    /// Most TX queues the device can be configured with.
    pub max_tx_queues: u16,
}

/// The queue limits of port `port_id` (`rte_eth_dev_info_get`), to choose queue counts before
/// [`Port::configure_with`].
pub fn device_limits(port_id: u16) -> Result<DeviceLimits> {
    ensure_eal()?;
    // SAFETY: the EAL is initialised; any u16 is accepted.
    if unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 0 {
        return Err(DpdkError::NoSuchPort(format!("port id {port_id}")));
    }
    let info = dev_info(port_id)?;
    Ok(DeviceLimits {
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
    })
}

/// Port set-up parameters beyond queue counts.
#[derive(Debug, Clone, Copy)]
pub struct PortConfig {
    /// RX queues.
    pub rx_queues: u16,
    /// TX queues.
    pub tx_queues: u16,
    /// Spread RX over queues by an IP/TCP/UDP RSS hash (only when `rx_queues > 1` and the
    /// device can hash those flow types).
    pub rss: bool,
    /// RX descriptors per queue (adjusted to device limits).
    pub rx_desc: u16,
    /// TX descriptors per queue (adjusted to device limits).
    pub tx_desc: u16,
}

impl PortConfig {
    /// `rx_queues`/`tx_queues` with 1024 descriptors each.
    pub fn new(rx_queues: u16, tx_queues: u16, rss: bool) -> Self {
        PortConfig {
            rx_queues,
            tx_queues,
            rss,
            rx_desc: 1024,
            tx_desc: 1024,
        }
    }
}

/// A configured ethdev port. Queues are handed out after [`Port::start`].
#[derive(Debug)]
pub struct Port {
    id: u16,
    _claim: PortClaim,
    rx_queues: u16,
    tx_queues: u16,
    rss_hf: u64,
    started: bool,
    rx_taken: Vec<AtomicBool>,
    /// One per TX queue: who holds it, its lock and counters when shared.
    tx_lanes: Arc<[TxLane]>,
}

/// [`TxLane::users`] of a queue held by one exclusive [`TxQueue`].
const TX_EXCLUSIVE: u32 = u32::MAX;

/// One TX queue's hand-out state, and its spin lock and counters when it is shared. On its own
/// cache line: the lock of one queue is not false-shared with another's.
#[derive(Debug, Default)]
#[repr(align(64))]
struct TxLane {
    /// 0: free; [`TX_EXCLUSIVE`]: one exclusive holder; n: n shared holders.
    users: AtomicU32,
    /// Held around `rte_eth_tx_burst` by a shared holder.
    lock: AtomicBool,
    /// Bursts sent by shared holders (written under `lock` only: load and store).
    bursts: AtomicU64,
    /// Lock takes that found it held (written under `lock` only).
    contended: AtomicU64,
}

impl TxLane {
    /// Takes the lock; returns whether another holder had it first.
    #[inline]
    fn lock(&self) -> bool {
        let mut contended = false;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            contended = true;
            while self.lock.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
        contended
    }

    /// Counts one burst (and a contention) and releases the lock.
    #[inline]
    fn unlock(&self, contended: bool) {
        // single writer while the lock is held: a load and a store, no locked add
        self.bursts.store(
            self.bursts.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        if contended {
            self.contended.store(
                self.contended.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
        self.lock.store(false, Ordering::Release);
    }
}

/// A handle on the TX sharing counters of a [`Port`] that outlives borrows of it (for a
/// statistics thread).
#[derive(Debug, Clone)]
pub struct TxSharing {
    lanes: Arc<[TxLane]>,
}

impl TxSharing {
    /// `(bursts through shared queues, contended lock takes)`, summed over the port's queues.
    pub fn counts(&self) -> (u64, u64) {
        self.lanes.iter().fold((0, 0), |(b, c), l| {
            (
                b + l.bursts.load(Ordering::Relaxed),
                c + l.contended.load(Ordering::Relaxed),
            )
        })
    }

    /// `stats` with the sharing counters filled in.
    pub fn add_to(&self, mut stats: PortStats) -> PortStats {
        (stats.tx_shared_bursts, stats.tx_lock_contended) = self.counts();
        stats
    }
}

impl Port {
    /// Configures port `port_id` with `rx_queues` RX queues drawing mbufs from `mempool`,
    /// `tx_queues` TX queues and, if `rss` and `rx_queues > 1`, RSS on IP/TCP/UDP (masked by
    /// what the device offers). The port is left stopped.
    pub fn configure(
        port_id: u16,
        rx_queues: u16,
        tx_queues: u16,
        rss: bool,
        mempool: Mempool,
    ) -> Result<Port> {
        Self::configure_with(port_id, PortConfig::new(rx_queues, tx_queues, rss), mempool)
    }

    /// [`Port::configure`] with all parameters.
    pub fn configure_with(port_id: u16, cfg: PortConfig, mempool: Mempool) -> Result<Port> {
        ensure_eal()?;
        // SAFETY: the EAL is initialised; any u16 is accepted.
        if unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 0 {
            return Err(DpdkError::NoSuchPort(format!("port id {port_id}")));
        }
        let claim = PortClaim::take(port_id)?;
        let info = dev_info(port_id)?;
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(DpdkError::InvalidArgument {
                what: format!("rx_queues {} for port {port_id}", cfg.rx_queues),
                why: "must be between 1 and the device's max_rx_queues",
            });
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::InvalidArgument {
                what: format!("tx_queues {} for port {port_id}", cfg.tx_queues),
                why: "must be between 1 and the device's max_tx_queues",
            });
        }
        let mut conf = sys::rte_eth_conf::default();
        let wanted = (sys::FG_ETH_RSS_IP | sys::FG_ETH_RSS_TCP | sys::FG_ETH_RSS_UDP) as u64;
        let rss_hf = if cfg.rss && cfg.rx_queues > 1 {
            wanted & info.flow_type_rss_offloads
        } else {
            0
        };
        if rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = ptr::null_mut(); // driver default key
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        } else {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_NONE;
        }
        // SAFETY: the port is valid; conf is a fully initialised rte_eth_conf read during the
        // call only.
        let ret =
            unsafe { sys::rte_eth_dev_configure(port_id, cfg.rx_queues, cfg.tx_queues, &conf) };
        check(&format!("rte_eth_dev_configure(port {port_id})"), ret)?;

        let (mut rx_desc, mut tx_desc) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: the port is valid and configured; both out pointers are valid u16s.
        let ret =
            unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &mut rx_desc, &mut tx_desc) };
        check(
            &format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {port_id})"),
            ret,
        )?;
        // SAFETY: the port is valid.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        let socket = u32::try_from(socket).unwrap_or(0);
        for q in 0..cfg.rx_queues {
            // SAFETY: the port is configured with rx_queues queues and q < rx_queues; a NULL
            // rxconf selects the driver default; the mempool lives for the whole process.
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port_id,
                    q,
                    rx_desc,
                    socket,
                    ptr::null(),
                    mempool.as_ptr(),
                )
            };
            check(
                &format!("rte_eth_rx_queue_setup(port {port_id}, queue {q})"),
                ret,
            )?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: the port is configured with tx_queues queues and q < tx_queues; a NULL
            // txconf selects the driver default.
            let ret =
                unsafe { sys::rte_eth_tx_queue_setup(port_id, q, tx_desc, socket, ptr::null()) };
            check(
                &format!("rte_eth_tx_queue_setup(port {port_id}, queue {q})"),
                ret,
            )?;
        }
        Ok(Port {
            id: port_id,
            _claim: claim,
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            rss_hf,
            started: false,
            rx_taken: (0..cfg.rx_queues).map(|_| AtomicBool::new(false)).collect(),
            tx_lanes: (0..cfg.tx_queues).map(|_| TxLane::default()).collect(),
        })
    }

    /// The ethdev port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Configured RX queue count.
    pub fn rx_queue_count(&self) -> u16 {
        self.rx_queues
    }

    /// Configured TX queue count.
    pub fn tx_queue_count(&self) -> u16 {
        self.tx_queues
    }

    /// The RSS hash functions in use (0: RSS off).
    pub fn rss_hf(&self) -> u64 {
        self.rss_hf
    }

    /// Device driver name (e.g. `net_ring`).
    pub fn driver_name(&self) -> Result<String> {
        let info = dev_info(self.id)?;
        if info.driver_name.is_null() {
            return Ok(String::new());
        }
        // SAFETY: driver_name is a static NUL-terminated string owned by the driver.
        Ok(unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned())
    }

    /// Starts the port.
    pub fn start(&mut self) -> Result<()> {
        // SAFETY: the port is valid and configured with all queues set up.
        let ret = unsafe { sys::rte_eth_dev_start(self.id) };
        check(&format!("rte_eth_dev_start(port {})", self.id), ret)?;
        self.started = true;
        Ok(())
    }

    /// Stops the port (no queue can be in use: they borrow the port).
    pub fn stop(&mut self) -> Result<()> {
        // SAFETY: the port is valid; &mut self guarantees no RxQueue/TxQueue is alive.
        let ret = unsafe { sys::rte_eth_dev_stop(self.id) };
        self.started = false;
        check(&format!("rte_eth_dev_stop(port {})", self.id), ret)
    }

    /// Stops (if started) and closes the port, releasing its resources.
    pub fn close(mut self) -> Result<()> {
        if self.started {
            self.stop()?;
        }
        // SAFETY: the port is valid and stopped; self is consumed so it is not used again.
        let ret = unsafe { sys::rte_eth_dev_close(self.id) };
        check(&format!("rte_eth_dev_close(port {})", self.id), ret)
    }

    /// Takes exclusive use of RX queue `queue` of the started port.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue<'_>> {
        take_queue(self, &self.rx_taken, "rx", queue)?;
        Ok(RxQueue {
            port: self.id,
            queue,
            owner: self,
        })
    }

    /// Takes exclusive use of TX queue `queue` of the started port.
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue<'_>> {
        let lane = self.tx_lane(queue)?;
        lane.users
            .compare_exchange(0, TX_EXCLUSIVE, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| self.tx_queue_error(queue, "already in use"))?;
        Ok(TxQueue {
            port: self.id,
            queue,
            owner: self,
            shared: None,
        })
    }

    /// Takes a shared use of TX queue `queue` of the started port: any number of threads may
    /// hold one each; every burst sent through it takes the queue's lock (and is counted).
    /// Refused while the queue is held exclusively (and [`Port::tx_queue`] is refused while
    /// shared holders exist).
    pub fn shared_tx_queue(&self, queue: u16) -> Result<TxQueue<'_>> {
        let lane = self.tx_lane(queue)?;
        lane.users
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < TX_EXCLUSIVE - 1).then(|| n + 1)
            })
            .map_err(|_| self.tx_queue_error(queue, "held exclusively"))?;
        Ok(TxQueue {
            port: self.id,
            queue,
            owner: self,
            shared: Some(lane),
        })
    }

    fn tx_lane(&self, queue: u16) -> Result<&TxLane> {
        if !self.started {
            return Err(self.tx_queue_error(queue, "the port is not started"));
        }
        self.tx_lanes
            .get(usize::from(queue))
            .ok_or_else(|| self.tx_queue_error(queue, "no such queue"))
    }

    fn tx_queue_error(&self, queue: u16, why: &'static str) -> DpdkError {
        DpdkError::Queue {
            port: self.id,
            dir: "tx",
            queue,
            why,
        }
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promiscuous(&self, on: bool) -> Result<()> {
        // SAFETY: the port is valid.
        let ret = unsafe {
            if on {
                sys::rte_eth_promiscuous_enable(self.id)
            } else {
                sys::rte_eth_promiscuous_disable(self.id)
            }
        };
        check(&format!("promiscuous({on}) on port {}", self.id), ret)
    }

    /// Whether promiscuous mode is on.
    pub fn promiscuous(&self) -> bool {
        // SAFETY: the port is valid.
        unsafe { sys::rte_eth_promiscuous_get(self.id) == 1 }
    }

    /// The port's MAC address.
    pub fn mac_address(&self) -> Result<[u8; 6]> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: the port is valid; addr is a valid out pointer.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.id, &mut addr) };
        check(&format!("rte_eth_macaddr_get(port {})", self.id), ret)?;
        Ok(addr.addr_bytes)
    }

    /// The port's MTU (bytes of IP packet, without the Ethernet header).
    pub fn mtu(&self) -> Result<u16> {
        let mut mtu = 0u16;
        // SAFETY: the port is valid; mtu is a valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_get_mtu(self.id, &mut mtu) };
        check(&format!("rte_eth_dev_get_mtu(port {})", self.id), ret)?;
        Ok(mtu)
    }

    /// Current link state, without waiting.
    pub fn link_status(&self) -> Result<LinkStatus> {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: the port is valid; link is a valid out pointer.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) };
        check(&format!("rte_eth_link_get_nowait(port {})", self.id), ret)?;
        Ok(LinkStatus {
            up: u32::from(link.link_status()) == sys::FG_ETH_LINK_UP as u32,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() == 1,
        })
    }

    /// Port counters, with the TX sharing counters.
    pub fn stats(&self) -> Result<PortStats> {
        Ok(self.tx_sharing().add_to(port_stats(self.id)?))
    }

    /// A handle on this port's TX sharing counters.
    pub fn tx_sharing(&self) -> TxSharing {
        TxSharing {
            lanes: Arc::clone(&self.tx_lanes),
        }
    }

    /// Resets the port counters.
    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: the port is valid.
        let ret = unsafe { sys::rte_eth_stats_reset(self.id) };
        check(&format!("rte_eth_stats_reset(port {})", self.id), ret)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if self.started {
            // SAFETY: the port is valid and no queue token can be alive (they borrow self).
            // Stopping leaves the port quiescent for the next Port that claims this id.
            unsafe { sys::rte_eth_dev_stop(self.id) };
        }
    }
}

/// Ports managed by a live [`Port`]: one handle per port id, so queue tokens stay exclusive.
static PORT_CLAIMED: [AtomicBool; sys::RTE_MAX_ETHPORTS as usize] =
    [const { AtomicBool::new(false) }; sys::RTE_MAX_ETHPORTS as usize];

/// Exclusive claim on a port id, released on drop.
#[derive(Debug)]
struct PortClaim(u16);

impl PortClaim {
    fn take(port_id: u16) -> Result<Self> {
        let flag = PORT_CLAIMED
            .get(usize::from(port_id))
            .ok_or_else(|| DpdkError::NoSuchPort(format!("port id {port_id}")))?;
        if flag.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::PortInUse(port_id));
        }
        Ok(PortClaim(port_id))
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        if let Some(flag) = PORT_CLAIMED.get(usize::from(self.0)) {
            flag.store(false, Ordering::Release);
        }
    }
}

fn dev_info(port_id: u16) -> Result<sys::rte_eth_dev_info> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: the EAL is initialised (callers check); info is a valid out pointer.
    let ret = unsafe { sys::rte_eth_dev_info_get(port_id, &mut info) };
    check(&format!("rte_eth_dev_info_get(port {port_id})"), ret)?;
    Ok(info)
}

fn take_queue(port: &Port, taken: &[AtomicBool], dir: &'static str, queue: u16) -> Result<()> {
    let err = |why| DpdkError::Queue {
        port: port.id,
        dir,
        queue,
        why,
    };
    if !port.started {
        return Err(err("the port is not started"));
    }
    let flag = taken
        .get(usize::from(queue))
        .ok_or_else(|| err("no such queue"))?;
    if flag.swap(true, Ordering::AcqRel) {
        return Err(err("already in use"));
    }
    Ok(())
}

/// Exclusive use of one RX queue of a started port (drop to give it back).
#[derive(Debug)]
pub struct RxQueue<'p> {
    port: u16,
    queue: u16,
    owner: &'p Port,
}

impl RxQueue<'_> {
    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

impl Drop for RxQueue<'_> {
    fn drop(&mut self) {
        if let Some(flag) = self.owner.rx_taken.get(usize::from(self.queue)) {
            flag.store(false, Ordering::Release);
        }
    }
}

/// Use of one TX queue of a started port (drop to give it back): exclusive
/// ([`Port::tx_queue`]), or shared with other threads behind the queue's lock
/// ([`Port::shared_tx_queue`]).
#[derive(Debug)]
pub struct TxQueue<'p> {
    port: u16,
    queue: u16,
    owner: &'p Port,
    /// The queue's lane when shared: its lock is taken around every burst.
    shared: Option<&'p TxLane>,
}

impl TxQueue<'_> {
    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Whether other threads send on this queue too (every burst takes its lock).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

impl Drop for TxQueue<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.owner.tx_lanes.get(usize::from(self.queue)) {
            if self.shared.is_some() {
                lane.users.fetch_sub(1, Ordering::AcqRel);
            } else {
                lane.users.store(0, Ordering::Release);
            }
        }
    }
}

impl Burst {
    /// Adds up to `n` fresh (reset, empty) mbufs from `pool` to the free slots in one bulk get
    /// (`rte_pktmbuf_alloc_bulk`, all or nothing); returns how many were added: `n` capped by
    /// the free slots, or 0 when the pool cannot give them all.
    pub fn alloc_from(&mut self, pool: &Mempool, n: usize) -> usize {
        let n = n.min(BURST_SIZE - self.len);
        if n == 0 {
            return 0;
        }
        // SAFETY: the pool is valid for the process lifetime; pkts[len..len + n] are free
        // slots of the array (n <= BURST_SIZE - len). On success the pool writes n owned,
        // reset mbufs there, which the burst then owns; on failure nothing is taken from the
        // pool and the slots stay outside pkts[..len].
        let ret = unsafe {
            sys::fg_pktmbuf_alloc_bulk(
                pool.as_ptr(),
                self.pkts.as_mut_ptr().add(self.len),
                n as u32,
            )
        };
        if ret != 0 {
            return 0;
        }
        self.len += n;
        n
    }

    /// Grows mbuf `i` at the end by `len` bytes (from its tailroom) and returns them, or
    /// `None` if `i >= len` or the tailroom is too small.
    pub fn append(&mut self, i: usize, len: u16) -> Option<&mut [u8]> {
        if i >= self.len {
            return None;
        }
        // SAFETY: pkts[i] is an owned valid mbuf of this burst, exclusively borrowed through
        // &mut self; append returns NULL (changing nothing) or a pointer to `len` bytes of the
        // buffer now counted in data_len.
        unsafe {
            let p = sys::fg_pktmbuf_append(self.pkts[i], len);
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p.cast::<u8>(), len.into()))
        }
    }
}

/// A DPDK log level, as [`route_log`] passes it on (DPDK's emergency, alert and critical
/// arrive as `Error`, notice as `Info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

impl LogLevel {
    /// From `RTE_LOG_EMERG` (1) .. `RTE_LOG_DEBUG` (8).
    pub fn from_rte(level: u32) -> LogLevel {
        match level {
            0..=4 => LogLevel::Error,
            5 => LogLevel::Warning,
            6 | 7 => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }

    /// The name EAL's `--log-level` takes.
    pub fn eal_name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// Where DPDK's messages go once [`route_log`] ran.
type LogSink = Box<dyn Fn(LogLevel, &str) + Send + Sync>;
static LOG_SINK: std::sync::OnceLock<LogSink> = std::sync::OnceLock::new();

extern "C" fn log_sink_trampoline(level: u32, buf: *const c_char, len: usize) {
    if buf.is_null() {
        return;
    }
    // SAFETY: the shim passes the stdio buffer being flushed: `len` readable bytes at `buf`,
    // valid for the duration of this call.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    if let Some(sink) = LOG_SINK.get() {
        // never unwind into C
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sink(LogLevel::from_rte(level), &String::from_utf8_lossy(bytes))
        }));
    }
}

/// Routes DPDK's log (`rte_log`, EAL and drivers) to `sink` instead of stdout and syslog:
/// each message with its level. Call it before [`Eal::init`] so the EAL's own start-up
/// messages are routed too. Which messages DPDK emits at all is its log level (EAL argument
/// `--log-level`). The first sink stays: later calls only re-attach the stream.
pub fn route_log(sink: impl Fn(LogLevel, &str) + Send + Sync + 'static) -> Result<()> {
    let _ = LOG_SINK.set(Box::new(sink));
    // SAFETY: fg_log_route stores a function pointer with the C signature of
    // `log_sink_trampoline` (valid for the whole process) and points DPDK's log stream at a
    // stdio cookie stream that calls it; callable before or after rte_eal_init.
    let ret = unsafe { sys::fg_log_route(Some(log_sink_trampoline)) };
    if ret < 0 {
        // fopencookie failed (it sets errno; ENOMEM is its only documented failure)
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(12);
        return Err(call_error("fopencookie", -errno));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Checks that need no running EAL (this unit-test binary never starts one); the EAL tests
    //! are in `tests/dpdk_smoke.rs`.
    use super::*;

    #[test]
    fn calls_before_eal_init_are_refused() {
        assert!(!Eal::is_initialised());
        assert!(matches!(
            Mempool::new("x", 63, 0, DEFAULT_DATA_ROOM, SOCKET_ANY),
            Err(DpdkError::NotInitialised)
        ));
        assert!(matches!(
            port_by_name("net_ring0"),
            Err(DpdkError::NotInitialised)
        ));
        assert!(matches!(
            attach_vdev("net_null0"),
            Err(DpdkError::NotInitialised)
        ));
        assert!(matches!(port_count(), Err(DpdkError::NotInitialised)));
    }

    #[test]
    fn non_eal_thread_has_no_lcore() {
        assert_eq!(lcore_id(), None);
    }

    #[test]
    fn empty_burst() {
        let mut b = Burst::new();
        assert!(b.is_empty() && !b.is_full());
        assert!(b.pop().is_none());
        assert!(b.packet(0).is_none());
        assert_eq!(b.iter().count(), 0);
        b.clear();
    }

    #[test]
    fn nul_in_eal_argument_is_an_error_message() {
        let err = cstring("EAL argument", "a\0b").unwrap_err();
        assert!(err.to_string().contains("NUL"));
    }
}
