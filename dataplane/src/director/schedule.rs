//! The IPVS schedulers, picking a server for a new connection from a [`DirectorState`]
//! snapshot. What they need besides the snapshot is owned by the worker: the `rr`/`wrr`
//! [`Cursor`] and the per-server connection counts ([`ServerLoad`]) for `lc`, `wlc`, `sed`, `nq`.
//!
//! The counts are per worker: each worker balances the connections it owns. With RSS
//! spreading clients evenly over the workers, the sum of per-worker balanced loads is balanced;
//! a shared atomic count would be exact but puts a contended cache line on every new
//! connection of every worker. IPVS itself counts per service, exactly; this is the
//! approximation, chosen for a lock- and atomic-free data path.
//!
//! The sorry server is used only when the scheduler finds no available regular server
//! (every regular server down or drained to weight 0: IPVS's "no destination available",
//! the moment keepalived/ALOHA switch to the sorry server).

use flowgate_config::appliance::Scheduler;

use super::hash::hash_addr;
use super::state::DirectorState;

/// Active (ESTABLISHED) and inactive (any other state) connections of one server, as IPVS
/// counts them for its least-connection schedulers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerLoad {
    pub active: u32,
    pub inactive: u32,
}

impl ServerLoad {
    /// IPVS `ip_vs_dest_conn_overhead`: active connections weigh 256 inactive ones.
    fn overhead(self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }
}

/// A worker's round-robin position in one director (IPVS `rr`/`wrr` mark), reset when the
/// snapshot's generation changes, as IPVS resets it when a destination is updated.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    generation: u64,
    /// `rr`: the next position; `wrr`: the last position, -1 before the first pick.
    index: isize,
    /// `wrr`: the current weight.
    cw: i64,
}

impl Default for Cursor {
    /// A cursor that takes the first server of any snapshot.
    fn default() -> Self {
        Cursor {
            generation: u64::MAX,
            index: -1,
            cw: 0,
        }
    }
}

impl Cursor {
    fn sync(&mut self, st: &DirectorState) {
        if self.generation != st.generation {
            *self = Cursor {
                generation: st.generation,
                index: -1,
                cw: 0,
            };
        }
    }
}

/// What the hash schedulers hash: the client's address (`sh`, `mh`) or the destination's (`dh`).
#[derive(Debug, Clone, Copy)]
pub struct SchedKey<'a> {
    pub client: &'a [u8; 16],
    pub dest: &'a [u8; 16],
}

/// Pick the server (its index) for a new connection, or the sorry server, or `None`.
pub fn pick(
    st: &DirectorState,
    cursor: &mut Cursor,
    loads: &[ServerLoad],
    key: SchedKey<'_>,
) -> Option<u16> {
    pick_regular(st, cursor, loads, key).or(st.sorry)
}

fn pick_regular(
    st: &DirectorState,
    cursor: &mut Cursor,
    loads: &[ServerLoad],
    key: SchedKey<'_>,
) -> Option<u16> {
    let avail = &st.available;
    if avail.is_empty() {
        return None;
    }
    let load = |i: u16| loads.get(usize::from(i)).copied().unwrap_or_default();
    let weight = |i: u16| u64::from(st.servers[usize::from(i)].weight);
    match st.scheduler {
        Scheduler::Rr => {
            cursor.sync(st);
            let i = (cursor.index.max(0) as usize) % avail.len();
            cursor.index = ((i + 1) % avail.len()) as isize;
            Some(avail[i])
        }
        Scheduler::Wrr => {
            cursor.sync(st);
            wrr(st, cursor)
        }
        Scheduler::Lc => avail.iter().copied().min_by_key(|&i| load(i).overhead()),
        // IPVS `wlc`: least overhead / weight, compared by cross-multiplying; ties to the first.
        Scheduler::Wlc => least(avail, |i| (load(i).overhead(), weight(i))),
        Scheduler::Sed => least(avail, |i| (u64::from(load(i).active) + 1, weight(i))),
        // IPVS `nq`: an idle server right away, else `sed`.
        Scheduler::Nq => avail
            .iter()
            .copied()
            .find(|&i| load(i).active == 0)
            .or_else(|| least(avail, |i| (u64::from(load(i).active) + 1, weight(i)))),
        Scheduler::Sh => st.bucket_lookup(key.client),
        Scheduler::Dh => st.bucket_lookup(key.dest),
        Scheduler::Mh => st
            .maglev
            .as_ref()
            .map(|m| m.lookup(hash_addr(st.seed, key.client, 0))),
    }
}

/// The server with the least `cost.0 / cost.1` (the first on ties).
fn least(avail: &[u16], cost: impl Fn(u16) -> (u64, u64)) -> Option<u16> {
    let mut best: Option<(u16, u64, u64)> = None;
    for &i in avail {
        let (c, w) = cost(i);
        match best {
            Some((_, bc, bw))
                if u128::from(c) * u128::from(bw) >= u128::from(bc) * u128::from(w) => {}
            _ => best = Some((i, c, w)),
        }
    }
    best.map(|b| b.0)
}

/// IPVS `ip_vs_wrr_schedule`: interleaved weighted round robin stepping the current weight
/// down by the gcd of the weights each time the list wraps.
fn wrr(st: &DirectorState, c: &mut Cursor) -> Option<u16> {
    let avail = &st.available;
    let n = avail.len() as isize;
    let (max, g) = (i64::from(st.wrr_max), i64::from(st.wrr_gcd.max(1)));
    if max == 0 {
        return None;
    }
    // At most one full sweep of current weights: max/g rounds of n servers.
    for _ in 0..=(n as i64 * (max / g + 1)) {
        c.index = (c.index + 1) % n;
        if c.index == 0 {
            c.cw -= g;
            if c.cw <= 0 {
                c.cw = max;
            }
        }
        let id = avail[c.index as usize];
        if i64::from(st.servers[usize::from(id)].weight) >= c.cw {
            return Some(id);
        }
    }
    None
}
