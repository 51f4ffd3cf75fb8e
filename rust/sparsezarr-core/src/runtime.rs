//! Process-wide execution resources: thread pools that survive `fork()`.
//!
//! rayon's global pool deadlocks in a forked child (its worker threads do not exist there, but its
//! registry says they do). sparsezarr never uses the global pool: every parallel section runs in a
//! pool owned by a [`Runtime`] that records the process id it was created in. When the current
//! process id differs (we are in a forked child), a fresh runtime is created and the parent's is
//! leaked: its threads do not exist in the child, and its locks may be held by threads that no
//! longer exist, so it must never be touched or dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::index_cache::IndexCache;

/// Thread pools and caches of one process.
pub struct Runtime {
    pid: u32,
    pools: Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>,
    /// Decoded shard indexes, shared by every array of the process.
    pub index_cache: IndexCache,
}

static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());

/// Byte budget of the shard index cache (kept in an atomic so that a forked child's fresh runtime
/// inherits the setting).
static INDEX_CACHE_BUDGET: AtomicUsize = AtomicUsize::new(64 << 20);

/// Set the byte budget of the process-wide shard index cache (0 disables it).
pub fn set_index_cache_budget(bytes: usize) {
    INDEX_CACHE_BUDGET.store(bytes, Ordering::Relaxed);
    Runtime::get().index_cache.set_budget(bytes);
}

/// Number of CPU cores available to this process.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Runtime {
    /// The runtime of the current process, created on first use (and anew after a fork).
    pub fn get() -> &'static Runtime {
        let pid = std::process::id();
        let current = RUNTIME.load(Ordering::Acquire);
        if !current.is_null() {
            // SAFETY: runtimes are leaked, never freed, so a non-null pointer stays valid.
            let rt = unsafe { &*current };
            if rt.pid == pid {
                return rt;
            }
        }
        let fresh = Box::into_raw(Box::new(Runtime {
            pid,
            pools: Mutex::new(HashMap::new()),
            index_cache: IndexCache::new(INDEX_CACHE_BUDGET.load(Ordering::Relaxed)),
        }));
        match RUNTIME.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: `fresh` was just leaked from a Box.
            Ok(_) => unsafe { &*fresh },
            Err(winner) => {
                // Another thread installed a runtime first; use it and free ours.
                // SAFETY: `fresh` is ours alone and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as above, runtimes are never freed.
                let rt = unsafe { &*winner };
                if rt.pid == pid { rt } else { Self::get() }
            }
        }
    }

    /// The thread pool with `threads` workers (0 = one per core).
    ///
    /// # Errors
    /// Returns [`Error::Internal`] if the operating system refuses to start threads.
    pub fn pool(&self, threads: usize) -> Result<Arc<rayon::ThreadPool>> {
        let threads = if threads == 0 { available_cores() } else { threads };
        let mut pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = pools.get(&threads) {
            return Ok(pool.clone());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("sparsezarr-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start thread pool: {e}")))?;
        let pool = Arc::new(pool);
        pools.insert(threads, pool.clone());
        Ok(pool)
    }
}

/// Ask the kernel to back a large, not yet touched output buffer with transparent huge pages
/// (where it only does so on request): filling it then takes one page fault per 2 MiB instead of
/// one per 4 KiB. A hint only; nothing changes if the kernel declines.
///
/// `ptr..ptr + len` is the buffer (initialised or not: the memory is never accessed).
pub fn hint_huge_pages(ptr: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("SPARSEZARR_HUGE_PAGES").map_or(true, |v| v != "0"));
    if !enabled || len < 2 * HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: `start..end` lies inside the caller's buffer, which this process owns;
        // MADV_HUGEPAGE only changes how the kernel backs the pages, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// Run `f` inside the pool with `threads` workers (0 = one per core), catching panics.
///
/// # Errors
/// Propagates the error of `f`; a panic becomes [`Error::Internal`].
pub fn run_in_pool<T: Send>(threads: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = Runtime::get().pool(threads)?;
    crate::error::catch_panic(|| pool.install(f))
}

/// Whether the current thread is a worker of a sparsezarr pool. Parallel iterators must only run
/// there: outside, rayon would start its global pool, which does not survive `fork()`.
#[must_use]
pub fn in_pool() -> bool {
    rayon::current_thread_index().is_some()
}

/// Run `f` on every item, in parallel inside a pool and sequentially outside one.
///
/// # Errors
/// The first error of `f`.
pub fn try_for_each<T: Sync, F>(items: &[T], f: F) -> Result<()>
where
    F: Fn(&T) -> Result<()> + Sync + Send,
{
    use rayon::prelude::*;
    if in_pool() && items.len() > 1 { items.par_iter().try_for_each(f) } else { items.iter().try_for_each(f) }
}

/// Map `f` over every item (in order), in parallel inside a pool and sequentially outside one.
///
/// # Errors
/// The first error of `f`.
pub fn try_map<T: Sync, R: Send, F>(items: &[T], f: F) -> Result<Vec<R>>
where
    F: Fn(&T) -> Result<R> + Sync + Send,
{
    use rayon::prelude::*;
    if in_pool() && items.len() > 1 { items.par_iter().map(f).collect() } else { items.iter().map(f).collect() }
}

/// Run `f` on every owned item, in parallel inside a pool and sequentially outside one.
///
/// # Errors
/// The first error of `f`.
pub fn try_for_each_owned<T: Send, F>(items: Vec<T>, f: F) -> Result<()>
where
    F: Fn(T) -> Result<()> + Sync + Send,
{
    use rayon::prelude::*;
    if in_pool() && items.len() > 1 { items.into_par_iter().try_for_each(f) } else { items.into_iter().try_for_each(f) }
}

/// Map `f` over every owned item (in order), in parallel inside a pool and sequentially outside
/// one.
///
/// # Errors
/// The first error of `f`.
pub fn try_map_owned<T: Send, R: Send, F>(items: Vec<T>, f: F) -> Result<Vec<R>>
where
    F: Fn(T) -> Result<R> + Sync + Send,
{
    use rayon::prelude::*;
    if in_pool() && items.len() > 1 { items.into_par_iter().map(f).collect() } else { items.into_iter().map(f).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn pool_runs_parallel_work() {
        let sum: u64 = run_in_pool(2, || Ok((0..1000u64).into_par_iter().sum())).unwrap();
        assert_eq!(sum, 499_500);
    }

    #[test]
    fn panics_become_errors() {
        let r: Result<()> = run_in_pool(1, || panic!("boom"));
        assert!(matches!(r, Err(Error::Internal(m)) if m.contains("boom")));
    }
}
