//! Completed objects are compacted into one page-aligned buffer: one copy per object (not per
//! viewer), after which every viewer's response body is a single slice — one `iovec` for a
//! `writev`, one queue entry per viewer instead of one per received piece — and starts on a page
//! boundary, which the kernel copies into socket buffers measurably faster.

use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;

use bytes::Bytes;

/// Objects larger than this stay in their received pieces (a 2× transient is not worth it).
pub(super) const COMPACT_MAX: u64 = 64 << 20;
const PAGE: usize = 4096;

/// An owned, page-aligned byte buffer (the owner behind a compacted object's `Bytes`).
struct Aligned {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: `Aligned` owns its allocation exclusively and never mutates it after construction.
unsafe impl Send for Aligned {}
// SAFETY: shared access is read-only.
unsafe impl Sync for Aligned {}

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `concat` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The pieces concatenated into one page-aligned `Bytes`; `None` when there is nothing to gain
/// (one piece or none) or the allocation fails (the pieces then stay as they are).
pub(super) fn concat(pieces: &[Bytes]) -> Option<Bytes> {
    if pieces.len() < 2 {
        return None;
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let layout = Layout::from_size_align(len.max(1), PAGE).ok()?;
    // SAFETY: `layout` has a non-zero size.
    let ptr = NonNull::new(unsafe { alloc(layout) })?;
    let mut at = 0;
    for p in pieces {
        // SAFETY: the destination has room for `len` bytes in all; source and destination do
        // not overlap (a fresh allocation).
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), ptr.as_ptr().add(at), p.len()) };
        at += p.len();
    }
    Some(Bytes::from_owner(Aligned { ptr, len, layout }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_in_order_on_a_page_boundary() {
        let pieces = [Bytes::from_static(b"abc"), Bytes::from(vec![b'd'; 5000]), Bytes::from_static(b"e")];
        let one = concat(&pieces).expect("compacted");
        assert_eq!(one.len(), 5004);
        assert_eq!(&one[..4], b"abcd");
        assert_eq!(one[5003], b'e');
        assert_eq!(one.as_ptr() as usize % PAGE, 0, "starts on a page boundary");
        // Slices share the buffer; it is freed when the last one goes (Miri/ASan would flag).
        let tail = one.slice(4000..);
        drop(one);
        assert_eq!(tail.len(), 1004);
    }

    #[test]
    fn single_piece_is_left_alone() {
        assert!(concat(&[Bytes::from_static(b"x")]).is_none());
        assert!(concat(&[]).is_none());
    }
}
