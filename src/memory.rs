//! Handing memory the daemon has freed back to the system, after a phase
//! that allocated and freed a lot of it: a restart's queue rebuild, a full
//! listing, a bulk operation.
//!
//! glibc's allocator keeps freed memory in the arena of the thread that
//! allocated it and gives back only the top of each heap. A rebuild that
//! decodes a million envelopes, and redb's page cache refilled from another
//! thread's arena, leave hundreds of MB free but resident. Measured with a
//! million queued messages (docs/performance.md, "A million queued messages"): 419 MB
//! resident after a restart, 282 MB after `malloc_trim(0)`, against 293 MB
//! after the fill. `malloc_trim` releases the free pages of every arena.
//!
//! This is the one module with `unsafe` code (a foreign call); the crate
//! denies it everywhere else.
#![allow(unsafe_code)]

/// Returns the allocator's free pages to the system. Walks every arena
/// under its lock: tens of milliseconds with a million queued, so only at
/// the end of a phase, never per message. A no-op where the C library is
/// not glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and touches only the allocator's
    // own state, under the allocator's locks; glibc documents it as safe to
    // call from any thread at any time (MT-Safe).
    unsafe {
        libc::malloc_trim(0);
    }
}
