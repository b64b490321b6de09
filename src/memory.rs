//! Gives the memory the proxy freed back to the system (DESIGN 16).
//!
//! glibc's allocator keeps what a burst freed (a big answer, a replay window, Chroma's own test
//! suite run through the proxy) in each thread's arena, so the resident size stays at its peak
//! long after: 78 to 102 MB measured after Chroma's suite, against 17 MB before it. So the
//! arenas are capped at [`ARENAS`] (fewer peaks kept apart), and every [`EVERY`],
//! `malloc_trim(0)` returns the free pages of every arena to the kernel (a few milliseconds of
//! one thread, off the request path). Chosen over switching the allocator
//! (mimalloc, jemalloc): it keeps glibc's behaviour everywhere else, adds no C build, and does
//! the one thing the profile asked for. And blocks of [`OWN_PAGES`] or more (request and answer
//! bodies, replay windows) always get pages of their own, which go back to the kernel when
//! freed: by default glibc raises that threshold to the largest block freed so far (up to
//! 32 MiB), so after the first large body every later one is carved from the arenas.
//!
//! It never allocates or frees anything itself, and on a C library other than glibc it does
//! nothing.

use std::time::Duration;

/// How often freed memory is returned.
pub const EVERY: Duration = Duration::from_secs(5);

/// Returns freed memory every [`EVERY`], for as long as the actix system runs.
pub fn release_periodically() {
    actix_web::rt::spawn(async {
        let mut ticks = actix_web::rt::time::interval(EVERY);
        loop {
            ticks.tick().await;
            let _ = actix_web::rt::task::spawn_blocking(release).await;
        }
    });
}

/// Arenas glibc may make: one per thread by default (up to 8 a core), each keeping its own
/// peak; the proxy's threads (workers, arbiters, the blocking pool) share these.
const ARENAS: i32 = 2;

/// Blocks at least this large are mapped on their own: glibc's initial threshold, kept fixed.
const OWN_PAGES: i32 = 128 << 10;

/// Caps the allocator's arenas at [`ARENAS`] and fixes its mmap threshold at [`OWN_PAGES`];
/// call it before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    // SAFETY: mallopt changes a setting of the allocator, under its lock; called before the
    // proxy starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Returns the free pages of every arena to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own free lists,
    // under the allocator's locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
