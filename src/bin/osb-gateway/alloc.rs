//! The gateway's global allocator: mimalloc, except that allocations of
//! [`HUGE`] bytes or more are anonymous mappings of their own, unmapped when
//! freed.
//!
//! NB: mimalloc keeps freed memory and returns it to the kernel only after
//! its purge delay, and only when its arenas see more work. Nothing on the
//! proxy path allocates that much (bodies stream in chunks of at most
//! `MAX_CONNECTION_BUF`), so the one huge allocation a gateway makes, the
//! 19 MiB of argon2's working memory at a platform's first login, stayed in
//! RSS for the life of the process: a fresh gateway went from 16 MB to
//! 37 MB at its first request and stayed there; now it drops back to 18 MB.
//! glibc's malloc maps large blocks the same way (its `M_MMAP_THRESHOLD`).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// From this size on, an allocation is a mapping of its own.
const HUGE: usize = 4 << 20;

/// Alignment every mapping has (the smallest page size).
const PAGE: usize = 4096;

/// mimalloc for everything but huge allocations; see the module doc.
pub struct Allocator;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping; no existing memory is
    // touched. Its pages are zero-filled.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: huge blocks are page-aligned mappings of at least `layout.size()`
// bytes, so they satisfy any layout `is_huge` accepts; a block is freed by
// the allocator that made it, since `is_huge` of the same layout (the
// caller must pass the one it allocated with) picks the same branch.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            map(layout.size())
        } else {
            MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            map(layout.size())
        } else {
            MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (is_huge(&layout), is_huge(&new)) {
            (false, false) => MiMalloc.realloc(ptr, layout, new_size),
            (true, true) => {
                let p = libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE);
                if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                let p = self.alloc(new);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grows and shrinks one block across the threshold and back, checking
    /// its bytes survive every move.
    #[test]
    fn blocks_keep_their_bytes_across_the_threshold() {
        let a = Allocator;
        let sizes = [100, HUGE - 1, HUGE, 3 * HUGE, HUGE + 1, 4096, 10];
        unsafe {
            let mut layout = Layout::from_size_align(sizes[0], 8).unwrap();
            let mut p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..layout.size() {
                *p.add(i) = (i % 251) as u8;
            }
            for &size in &sizes[1..] {
                let kept = layout.size().min(size);
                p = a.realloc(p, layout, size);
                assert!(!p.is_null(), "realloc to {size}");
                layout = Layout::from_size_align(size, 8).unwrap();
                for i in 0..kept {
                    assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} at size {size}");
                }
                for i in kept..size {
                    *p.add(i) = (i % 251) as u8;
                }
            }
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn huge_zeroed_blocks_are_zero_and_page_aligned() {
        let a = Allocator;
        let layout = Layout::from_size_align(HUGE + 123, 64).unwrap();
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert_eq!(p as usize % PAGE, 0);
            assert!((0..layout.size()).step_by(997).all(|i| *p.add(i) == 0));
            a.dealloc(p, layout);
        }
    }
}
