//! Completed objects are compacted into one page-aligned buffer: one copy per object (not per
//! viewer), after which every viewer's response body is a single slice — one `iovec` for a
//! `writev`, one queue entry per viewer instead of one per received piece — and starts on a page
//! boundary, which the kernel copies into socket buffers measurably faster.
//!
//! When the host asks for it (`Config::file_backed_objects`), a large object is compacted into
//! a memory-backed file (`memfd`) mapped into memory instead: the same bytes, still served as
//! shared `Bytes`, but a host can also send them with `sendfile(2)` from that file — no copy
//! into the socket buffer at all ([`file_of`] says where a slice lives).

use std::alloc::{alloc, dealloc, Layout};
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use bytes::Bytes;

/// Objects larger than this stay in their received pieces (a 2× transient is not worth it).
pub(super) const COMPACT_MAX: u64 = 64 << 20;
const PAGE: usize = 4096;

/// What owns a compacted object's bytes and how they are released.
enum Backing {
    /// Heap memory allocated with this layout.
    Heap(Layout),
    /// A memfd mapped shared; the descriptor is listed in [`FILES`] while the mapping lives.
    File(RawFd),
}

/// An owned, page-aligned, read-only byte buffer (the owner behind a compacted object's
/// `Bytes`): heap memory or a mapped memfd.
struct Owned {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: `Owned` owns its allocation or mapping (and descriptor) exclusively and never mutates
// it after construction.
unsafe impl Send for Owned {}
// SAFETY: shared access is read-only.
unsafe impl Sync for Owned {}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: allocated in `concat_heap` with exactly this layout.
            Backing::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), layout) },
            Backing::File(fd) => {
                if let Ok(mut files) = FILES.write() {
                    files.remove(&(self.ptr.as_ptr() as usize));
                }
                // SAFETY: mapped and opened in `concat_file` with exactly these values;
                // unmapped and closed once, here.
                unsafe {
                    libc::munmap(self.ptr.as_ptr().cast(), self.len);
                    libc::close(fd);
                }
                FILES_OPEN.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Copies the pieces, in order, to `dst`.
///
/// # Safety
/// `dst` is writable for the pieces' total length and overlaps none of them.
unsafe fn copy_pieces(pieces: &[Bytes], dst: NonNull<u8>) {
    let mut at = 0;
    for p in pieces {
        // SAFETY: within the caller's guarantee.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), dst.as_ptr().add(at), p.len()) };
        at += p.len();
    }
}

/// The pieces concatenated into one page-aligned `Bytes`; `None` when there is nothing to gain
/// (one piece or none) or the allocation fails (the pieces then stay as they are). With
/// `files`, an object of at least [`FILE_MIN`] goes into a memfd (while fewer than
/// [`MAX_FILES`] are open; else, or if that fails, into memory as usual).
pub(super) fn concat(pieces: &[Bytes], files: bool) -> Option<Bytes> {
    if pieces.len() < 2 {
        return None;
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    if files && len >= FILE_MIN {
        if let Some(b) = concat_file(pieces, len) {
            return Some(b);
        }
    }
    concat_heap(pieces, len)
}

/// The pieces copied into one page-aligned heap buffer of `len` bytes.
fn concat_heap(pieces: &[Bytes], len: usize) -> Option<Bytes> {
    let layout = Layout::from_size_align(len.max(1), PAGE).ok()?;
    // SAFETY: `layout` has a non-zero size.
    let ptr = NonNull::new(unsafe { alloc(layout) })?;
    // SAFETY: a fresh allocation of at least `len` bytes.
    unsafe { copy_pieces(pieces, ptr) };
    Some(Bytes::from_owner(Owned { ptr, len, backing: Backing::Heap(layout) }))
}

/// Objects smaller than this are not worth a file (a `sendfile` call of its own).
pub const FILE_MIN: usize = 64 << 10;
/// File-backed objects open at most (each holds one descriptor).
pub const MAX_FILES: usize = 1024;

/// File-backed objects open now.
static FILES_OPEN: AtomicUsize = AtomicUsize::new(0);
/// Every file-backed mapping: start address → (length, memfd).
static FILES: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// The file behind `bytes` (a slice of a file-backed object): its descriptor and the offset of
/// `bytes` in it, for `sendfile(fd, &offset, bytes.len())`. `None` for bytes in plain memory.
/// The descriptor stays open while any `Bytes` of that object is alive (e.g. the queued piece
/// `bytes` came from), so it is valid until the host reports those bytes sent.
pub fn file_of(bytes: &[u8]) -> Option<(RawFd, u64)> {
    file_range(bytes.as_ptr() as usize, bytes.len())
}

/// As [`file_of`], for `len` bytes at address `at` (only compared with the mappings, never read).
pub fn file_range(at: usize, len: usize) -> Option<(RawFd, u64)> {
    if len == 0 {
        return None;
    }
    let files = FILES.read().ok()?;
    let (&start, &(flen, fd)) = files.range(..=at).next_back()?;
    (at.checked_add(len)? <= start + flen).then(|| (fd, (at - start) as u64))
}

/// The pieces copied into a new memfd of `len` bytes, mapped; `None` if the cap is reached or
/// a call fails (everything opened is released again).
fn concat_file(pieces: &[Bytes], len: usize) -> Option<Bytes> {
    if FILES_OPEN.fetch_add(1, Ordering::AcqRel) >= MAX_FILES {
        FILES_OPEN.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let release = |fd: RawFd| {
        if fd >= 0 {
            // SAFETY: a descriptor this function opened and nothing else holds.
            unsafe { libc::close(fd) };
        }
        FILES_OPEN.fetch_sub(1, Ordering::AcqRel);
        None
    };
    // SAFETY: plain syscalls on a descriptor this function owns; the mapping is `len` bytes of
    // a file truncated to `len`, written only before it is shared.
    unsafe {
        let fd = libc::memfd_create(c"listo-object".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 || libc::ftruncate(fd, len as libc::off_t) != 0 {
            return release(fd);
        }
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        if p == libc::MAP_FAILED {
            return release(fd);
        }
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else { return release(fd) };
        copy_pieces(pieces, ptr);
        if let Ok(mut files) = FILES.write() {
            files.insert(ptr.as_ptr() as usize, (len, fd));
        }
        Some(Bytes::from_owner(Owned { ptr, len, backing: Backing::File(fd) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_in_order_on_a_page_boundary() {
        let pieces = [Bytes::from_static(b"abc"), Bytes::from(vec![b'd'; 5000]), Bytes::from_static(b"e")];
        let one = concat(&pieces, false).expect("compacted");
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
        assert!(concat(&[Bytes::from_static(b"x")], true).is_none());
        assert!(concat(&[], true).is_none());
    }

    #[test]
    fn a_large_object_is_file_backed_and_its_slices_say_where_they_are_in_the_file() {
        let big: Vec<u8> = (0..(FILE_MIN as u32 + 5000)).map(|i| (i % 251) as u8).collect();
        let pieces = [Bytes::copy_from_slice(&big[..1000]), Bytes::copy_from_slice(&big[1000..])];
        let one = concat(&pieces, true).expect("compacted");
        assert!(one[..] == big[..], "same bytes");
        let (fd, off) = file_of(&one[100..200]).expect("file-backed");
        assert_eq!(off, 100);
        // The file holds the same bytes at that offset.
        let mut buf = [0u8; 100];
        // SAFETY: pread into a buffer of its length from a descriptor alive while `one` is.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
        assert_eq!(n, 100);
        assert_eq!(&buf[..], &big[100..200]);
        // Plain memory is not; a small object is not worth a file.
        assert!(file_of(&big[..10]).is_none());
        let small = concat(&[Bytes::from_static(b"ab"), Bytes::from_static(b"c")], true).expect("compacted");
        assert!(file_of(&small).is_none());
        // Released with its last slice: the descriptor is closed and forgotten.
        let tail = one.slice(10..20);
        drop(one);
        assert!(file_of(&tail).is_some());
        let addr = tail.as_ptr() as usize;
        drop(tail);
        let files = FILES.read().unwrap();
        assert!(files.range(..=addr).next_back().is_none_or(|(&s, &(l, _))| s + l <= addr));
    }

    #[test]
    fn any_split_of_a_file_backed_object_reads_back_from_the_file_at_file_of_offsets() {
        use proptest::prelude::*;
        let cfg = ProptestConfig { cases: 24, ..ProptestConfig::default() };
        proptest!(cfg, |(sizes in prop::collection::vec(1usize..40_000, 2..8), seed in any::<u8>(), a in any::<usize>(), b in any::<usize>())| {
            let total: usize = sizes.iter().sum::<usize>() + FILE_MIN;
            let data: Vec<u8> = (0..total).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut pieces = Vec::new();
            let mut at = 0;
            for s in sizes.iter().copied().chain(std::iter::once(FILE_MIN)) {
                pieces.push(Bytes::copy_from_slice(&data[at..at + s]));
                at += s;
            }
            let one = concat(&pieces, true).expect("compacted");
            prop_assert!(one[..] == data[..]);
            let (lo, hi) = { let (x, y) = (a % total, b % total); (x.min(y), x.max(y) + 1) };
            let part = one.slice(lo..hi);
            let (fd, off) = file_of(&part).expect("a slice of a file-backed object is in its file");
            prop_assert_eq!(off, lo as u64);
            let mut buf = vec![0u8; part.len()];
            // SAFETY: pread into a buffer of its length; the descriptor lives while `one` does.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
            prop_assert_eq!(n as usize, part.len());
            prop_assert!(buf[..] == data[lo..hi]);
            // Past the end of the object is not in it.
            prop_assert!(file_range(one.as_ptr() as usize + lo, total - lo + 1).is_none());
        });
    }
}
