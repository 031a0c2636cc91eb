//! What the process keeps resident, for a small server on a few cores:
//! - glibc's allocator with at most two arenas (by default each thread that allocates while
//!   another does can get its own, up to eight per core, each keeping its own free memory),
//!   and its free memory handed back to the system once a burst is over.
//!
//! Elsewhere than Linux with glibc it does nothing. Measured with the benchmark (README).

/// How many arenas, as `MALLOC_ARENA_MAX=2` (which the image also sets) gives them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: i32 = 2;

/// Call once at start, before the runtime's threads exist.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Give the system back the free memory the allocator holds (whole free pages, in every
/// arena). At most once a second: it walks the arenas' free lists, which a caller on a busy
/// path should not pay for on every call.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LAST.load(Ordering::Relaxed);
        if now <= last
            || LAST
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // SAFETY: malloc_trim takes the allocator's own locks; it frees nothing in use.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
