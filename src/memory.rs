//! What the process keeps resident, for a small server on a few cores:
//! - glibc's allocator with at most two arenas (by default each thread that allocates while
//!   another does can get its own, up to eight per core, each keeping its own free memory),
//!   and its free memory handed back to the system once a burst is over;
//! - the code only start-up ran, given back once started (as the kernel frees its own init
//!   code after boot): the binary's code pages are clean pages of the file, re-read from the
//!   page cache if they run again.
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

/// Once started: unmap the pages of the binary's code and read-only data that hold no private
/// change (in `/proc/self/smaps`: not writable, `Anonymous: 0 kB`), so only what runs from
/// now on comes back. Most of an idle bot's memory was the code start-up ran once (the AWS
/// SDK's setup, the config parser, clap, the store's schema), kept mapped. A mapping with a
/// private page (relocated read-only data) is left alone: dropping it would undo the
/// relocations. Returns how many KiB were unmapped.
pub fn release_startup_code() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return 0;
        };
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut released = 0;
        for (start, end, rss_kb) in clean_read_only_mappings(&smaps, &exe.to_string_lossy()) {
            // SAFETY: the range is a whole mapping of our own file, never writable and with no
            // private page: MADV_DONTNEED drops page-table entries only, and the next access
            // maps the same file bytes again.
            let ok = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            } == 0;
            if ok {
                released += rss_kb;
            }
        }
        released
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// `(start, end, resident KiB)` of each mapping of `path` in `smaps` that is not writable and
/// has no anonymous (privately changed) page.
#[cfg_attr(not(target_os = "linux"), expect(dead_code, reason = "Linux only"))]
fn clean_read_only_mappings(smaps: &str, path: &str) -> Vec<(usize, usize, u64)> {
    /// The mapping being read, and what its lines said so far.
    struct Mapping {
        start: usize,
        end: usize,
        ours_and_read_only: bool,
        rss_kb: Option<u64>,
        anonymous_kb: Option<u64>,
    }
    let mut found = Vec::new();
    let mut current: Option<Mapping> = None;
    let mut finish = |m: Option<Mapping>| {
        if let Some(m) = m
            && m.ours_and_read_only
            && m.anonymous_kb == Some(0)
            && let Some(rss) = m.rss_kb
        {
            found.push((m.start, m.end, rss));
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            finish(current.take());
            let perms = fields.next().unwrap_or("");
            let name = fields.nth(3).unwrap_or("");
            current = Some(Mapping {
                start,
                end,
                ours_and_read_only: name == path && !perms.contains('w'),
                rss_kb: None,
                anonymous_kb: None,
            });
            continue;
        }
        let kb = fields.next().and_then(|v| v.parse::<u64>().ok());
        if let Some(m) = current.as_mut() {
            match first {
                "Rss:" => m.rss_kb = kb,
                "Anonymous:" => m.anonymous_kb = kb,
                _ => {}
            }
        }
    }
    finish(current);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_read_only_mappings_without_private_pages_are_released() {
        let smaps = "\
55d0a0000000-55d0a0493000 r--p 00000000 08:01 123 /opt/bot
Rss:                2300 kB
Anonymous:             0 kB
55d0a0494000-55d0a0eed000 r-xp 00493000 08:01 123 /opt/bot
Rss:                9600 kB
Anonymous:             0 kB
55d0a0eee000-55d0a0f66000 r--p 00eec000 08:01 123 /opt/bot
Rss:                 480 kB
Anonymous:           480 kB
55d0a0f66000-55d0a0f71000 rw-p 00f63000 08:01 123 /opt/bot
Rss:                  44 kB
Anonymous:            44 kB
7f0c134d3000-7f0c134d7000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1048 kB
Anonymous:             0 kB
7f0c12b73000-7f0c12cf4000 rw-p 00000000 00:00 0
Rss:                1540 kB
Anonymous:          1540 kB
";
        assert_eq!(
            clean_read_only_mappings(smaps, "/opt/bot"),
            vec![
                (0x55d0a0000000, 0x55d0a0493000, 2300),
                (0x55d0a0494000, 0x55d0a0eed000, 9600),
            ]
        );
    }

    #[test]
    fn releasing_the_startup_code_leaves_the_process_running() {
        // Everything this test binary runs after it comes back from the file.
        let _ = release_startup_code();
        let words: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(words.concat().len(), 2890);
    }
}
