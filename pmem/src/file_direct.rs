//! The `file-direct` backend: writes bypass the page cache (O_DIRECT, whole 4 KiB blocks), so the
//! fdatasync that persists a group has no dirty pages to write back, only the device cache to
//! flush. On this project's virtio disk a 4 KiB write + fdatasync took 25 µs and 4-7 µs of CPU
//! this way against 33 µs and 13 µs through the page cache (docs/benchmarks.md, session 7).
//!
//! Writes are staged in aligned blocks until `persist` (or until the stage is full) and leave in
//! one `pwritev` per run of consecutive blocks. A partly written block needs its old bytes: the
//! block the last persist ended in (where the next append starts) is kept for that; a block whose
//! rest is free space (`write_at_end`: the log's appends) is zero-filled instead; any other one is
//! read back first, with the 15 blocks after it, where the next groups will end. Reads go
//! through an ordinary descriptor of the same file; the kernel drops cached pages a direct write
//! covers, so they see what was written.

use crate::file::LogFile;
use crate::medium::{check_range, free_tail_bytes, BackendKind, Medium};
use nix::sys::uio::{preadv, pwritev};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// Unit of every direct write: a page, a multiple of any logical block size in use.
pub const BLOCK_BYTES: usize = 4096;

/// Most blocks staged before they are written out ahead of `persist` (1 MiB): bounds memory under
/// large group commits.
const MAX_STAGED_BLOCKS: usize = 256;

/// Most blocks one `pwritev` or `preadv` takes (256 KiB); its iovecs live on the stack, so a
/// group commit allocates nothing.
const BLOCKS_PER_CALL: usize = 64;

/// Blocks read at once when a partly written block is not cached (64 KiB): appends move forward,
/// so the blocks after it are the next ones a group ends in, and each would need reading too.
const READ_AHEAD_BLOCKS: usize = 16;

/// One block, aligned as O_DIRECT requires of the memory it writes from.
#[repr(C, align(4096))]
struct Block([u8; BLOCK_BYTES]);

impl Block {
    fn zeroed() -> Box<Block> {
        Box::new(Block([0; BLOCK_BYTES]))
    }
}

/// Blocks by block index, few enough to search linearly (at most `MAX_STAGED_BLOCKS`); a `Vec`
/// with its room reserved up front, so staging allocates nothing once warm.
type Blocks = Vec<(u64, Box<Block>)>;

fn position(blocks: &Blocks, index: u64) -> Option<usize> {
    // From the back: an append continues the block staged last.
    blocks.iter().rposition(|(at, _)| *at == index)
}

/// O_DIRECT write + fdatasync medium.
pub struct DirectMedium {
    /// Buffered descriptor: reads.
    file: LogFile,
    /// O_DIRECT descriptor of the same file: writes and the sync.
    direct: File,
    /// Blocks written since they last left, each with its whole new content.
    staged: Blocks,
    /// Blocks whose content is known to equal the file's: the block the last write-out ended in
    /// (where the next append starts) and the blocks read ahead after a read. A block is taken
    /// out of here when it is staged, so nothing here is older than the file.
    clean: Blocks,
    /// Blocks written out since the last fdatasync.
    unsynced: bool,
    /// Direct reads issued so far (an append into free space should need none).
    read_calls: u64,
    /// Blocks kept for reuse: a reused block is always wholly overwritten or read back first, so
    /// none of its old bytes survive.
    spare: Vec<Box<Block>>,
}

impl DirectMedium {
    /// Opens a second, O_DIRECT descriptor of `file` (through /proc/self/fd: before `publish` the
    /// file has no name of its own yet) and checks a direct write is accepted there, by writing
    /// the first block back unchanged. `Unsupported` errors say direct writes cannot serve this
    /// file: the filesystem refuses O_DIRECT (EINVAL, e.g. tmpfs before Linux 6.6) or the size is
    /// not whole blocks.
    pub fn new(file: LogFile) -> io::Result<DirectMedium> {
        if file.size_bytes % BLOCK_BYTES as u64 != 0 || file.size_bytes == 0 {
            // Unsupported, not invalid: `file` then falls back to pwrite, which takes any size.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: size {} is not a whole number of {BLOCK_BYTES}-byte blocks",
                    file.resource, file.size_bytes
                ),
            ));
        }
        let reopen = format!("/proc/self/fd/{}", file.file.as_raw_fd());
        let direct =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(reopen).map_err(unsupported)?;
        let mut medium = DirectMedium {
            file,
            direct,
            staged: Vec::with_capacity(MAX_STAGED_BLOCKS),
            clean: Vec::with_capacity(READ_AHEAD_BLOCKS),
            unsynced: false,
            read_calls: 0,
            spare: Vec::with_capacity(MAX_STAGED_BLOCKS + READ_AHEAD_BLOCKS),
        };
        let first = Block::zeroed();
        medium.clean.push((0, first));
        medium.read_blocks(0, 1).map_err(unsupported)?;
        medium.write_blocks(0, 1, |at| &medium.clean[at].1).map_err(unsupported)?;
        Ok(medium)
    }

    /// The staged block `index`, created from its current content on first touch (unless
    /// `overwritten`: every byte of it is about to be replaced).
    fn staged_block(&mut self, index: u64, overwritten: bool) -> io::Result<&mut Block> {
        let at = match position(&self.staged, index) {
            Some(at) => at,
            None => {
                let block = match position(&self.clean, index) {
                    Some(at) => self.clean.swap_remove(at).1,
                    None if overwritten => self.block_to_overwrite(),
                    None => self.read_ahead(index)?,
                };
                self.staged.push((index, block));
                self.staged.len() - 1
            }
        };
        Ok(&mut self.staged[at].1)
    }

    fn spare_block(&mut self) -> Box<Block> {
        self.spare.pop().unwrap_or_else(Block::zeroed)
    }

    /// A block to overwrite wholly: a spare one, else the oldest cached clean block (only a copy
    /// of the file's bytes: appends seldom read, so the blocks of an earlier read-ahead would
    /// otherwise sit there while the pool grows), else a new one.
    fn block_to_overwrite(&mut self) -> Box<Block> {
        if self.spare.is_empty() && self.clean.len() > 1 {
            return self.clean.remove(0).1;
        }
        self.spare_block()
    }

    /// Reads block `index` and up to `READ_AHEAD_BLOCKS - 1` blocks after it (not past the file's
    /// end, none that is staged: a staged block is newer than the file, and caching the file's
    /// copy would bring old bytes back once the staged one is written out); returns block `index`
    /// and keeps the others as clean, in place of the clean blocks held before.
    fn read_ahead(&mut self, index: u64) -> io::Result<Box<Block>> {
        let blocks_in_file = self.file.size_bytes / BLOCK_BYTES as u64;
        let mut count = 1;
        while count < READ_AHEAD_BLOCKS
            && index + (count as u64) < blocks_in_file
            && position(&self.staged, index + count as u64).is_none()
        {
            count += 1;
        }
        while let Some((_, block)) = self.clean.pop() {
            self.spare.push(block);
        }
        for offset in 0..count {
            let block = self.spare_block();
            self.clean.push((index + offset as u64, block));
        }
        self.read_blocks(index, count)?;
        Ok(self.clean.swap_remove(0).1)
    }

    /// Fills `clean` (exactly `count` blocks, from block `first` on) from the file, in `preadv`
    /// calls of at most `BLOCKS_PER_CALL` blocks; a short read resumes at the first block it did
    /// not finish (O_DIRECT reads whole blocks, and reading one again is harmless).
    fn read_blocks(&mut self, first: u64, count: usize) -> io::Result<()> {
        let mut done = 0;
        while done < count {
            let chunk = (count - done).min(BLOCKS_PER_CALL);
            let mut slices: [IoSliceMut; BLOCKS_PER_CALL] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
            for (slice, (_, block)) in slices.iter_mut().zip(&mut self.clean[done..done + chunk]) {
                *slice = IoSliceMut::new(&mut block.0);
            }
            let offset = (first + done as u64) * BLOCK_BYTES as u64;
            self.read_calls += 1;
            let read = preadv(&self.direct, &mut slices[..chunk], offset as i64).map_err(io::Error::from)?;
            if read < BLOCK_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: direct read of block {} got {read} bytes", self.file.resource, first + done as u64),
                ));
            }
            done += read / BLOCK_BYTES;
        }
        Ok(())
    }

    /// Stages `bytes` at `offset`, and zeros over the `zeroed_after` bytes after them (at most the
    /// rest of the last block: free space, so that block needs no read of its old content).
    fn stage(&mut self, offset: u64, bytes: &[u8], zeroed_after: u64) -> io::Result<()> {
        check_range(&self.file.resource, self.file.size_bytes, offset, bytes.len() + zeroed_after as usize)?;
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let index = at / BLOCK_BYTES as u64;
            let within = (at % BLOCK_BYTES as u64) as usize;
            let len = rest.len().min(BLOCK_BYTES - within);
            // Only the last piece can end inside its block, and then the zeros fill the rest.
            let whole_block = within == 0 && (len == BLOCK_BYTES || zeroed_after > 0);
            let block = self.staged_block(index, whole_block)?;
            block.0[within..within + len].copy_from_slice(&rest[..len]);
            if within + len < BLOCK_BYTES && zeroed_after > 0 {
                block.0[within + len..].fill(0);
            }
            at += len as u64;
            rest = &rest[len..];
        }
        if self.staged.len() >= MAX_STAGED_BLOCKS {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes every staged block out (not yet durable), one `pwritev` per run of consecutive
    /// blocks, keeps the last one as clean (the next append continues it) and the rest as spare.
    fn write_out(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.staged.sort_unstable_by_key(|(index, _)| *index);
        let mut start = 0;
        while start < self.staged.len() {
            let first = self.staged[start].0;
            let mut end = start + 1;
            while end < self.staged.len() && self.staged[end].0 == first + (end - start) as u64 {
                end += 1;
            }
            let staged = &self.staged;
            self.write_blocks(first, end - start, |at| &staged[start + at].1)?;
            start = end;
        }
        self.unsynced = true;
        let last = self.staged.pop().expect("not empty");
        if let Some(at) = position(&self.clean, last.0) {
            let (_, old) = self.clean.swap_remove(at);
            self.spare.push(old);
        }
        self.clean.push(last);
        self.spare.extend(self.staged.drain(..).map(|(_, block)| block));
        self.spare.truncate(MAX_STAGED_BLOCKS + READ_AHEAD_BLOCKS);
        Ok(())
    }

    /// `count` blocks (`block(i)` is the i-th) at block index `first`, in `pwritev` calls of at
    /// most `BLOCKS_PER_CALL` blocks; a short write resumes at the first block it did not finish
    /// (rewriting a block is harmless).
    fn write_blocks<'a>(&self, first: u64, count: usize, block: impl Fn(usize) -> &'a Block) -> io::Result<()> {
        let mut done = 0;
        while done < count {
            let chunk = (count - done).min(BLOCKS_PER_CALL);
            let mut slices = [IoSlice::new(&[]); BLOCKS_PER_CALL];
            for (i, slice) in slices[..chunk].iter_mut().enumerate() {
                *slice = IoSlice::new(&block(done + i).0);
            }
            let offset = (first + done as u64) * BLOCK_BYTES as u64;
            let written = pwritev(&self.direct, &slices[..chunk], offset as i64).map_err(io::Error::from)?;
            if written < BLOCK_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "{}: direct write of block {} wrote {written} bytes",
                        self.file.resource,
                        first + done as u64
                    ),
                ));
            }
            done += written / BLOCK_BYTES;
        }
        Ok(())
    }
}

/// EINVAL from open or a direct read/write means the filesystem does not do O_DIRECT.
fn unsupported(error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::EINVAL) {
        io::Error::new(io::ErrorKind::Unsupported, format!("O_DIRECT refused ({error})"))
    } else {
        error
    }
}

impl Medium for DirectMedium {
    fn size_bytes(&self) -> u64 {
        self.file.size_bytes
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.stage(offset, bytes, 0)
    }

    fn write_at_end(&mut self, offset: u64, bytes: &[u8], free_after: u64) -> io::Result<()> {
        self.stage(offset, bytes, free_tail_bytes(offset, bytes.len(), free_after, BLOCK_BYTES as u64))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.file.resource, self.file.size_bytes, offset, buf.len())?;
        self.file.file.read_exact_at(buf, offset)?;
        // Staged blocks have not reached the file yet: their bytes win.
        let end = offset + buf.len() as u64;
        for (index, block) in &self.staged {
            let block_start = index * BLOCK_BYTES as u64;
            let from = offset.max(block_start);
            let to = end.min(block_start + BLOCK_BYTES as u64);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&block.0[(from - block_start) as usize..(to - block_start) as usize]);
            }
        }
        Ok(())
    }

    fn persist(&mut self) -> io::Result<()> {
        self.write_out()?;
        if self.unsynced {
            self.direct.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn resource(&self) -> &str {
        &self.file.resource
    }

    fn kind(&self) -> BackendKind {
        BackendKind::FileDirect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::open_or_create;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("decree-direct-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes `rounds` random groups to a `size`-byte file (mostly appends continuing the last
    /// write, the log's pattern, some anywhere; partial, whole-block, block-crossing, some past the
    /// stage's capacity) and checks reads against a plain byte image of the same writes: staged,
    /// and after every persist from a fresh descriptor. False if the filesystem refuses O_DIRECT.
    fn matches_a_byte_image(size: u64, seed: u64, rounds: usize) -> bool {
        let dir = scratch("image");
        let file = open_or_create(&dir.join("log"), size).unwrap();
        let Ok(mut medium) = DirectMedium::new(file) else {
            eprintln!("skipped: {} refuses O_DIRECT", dir.display());
            return false;
        };
        let mut image = vec![0u8; size as usize];
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut end = 0u64;
        for round in 0..rounds {
            for _ in 0..rng.usize(1..60) {
                let len = [1, 160, 160, 4095, 4096, 4097, 20_000][rng.usize(0..7)];
                let offset =
                    if rng.u8(0..10) < 7 && end + len as u64 <= size { end } else { rng.u64(0..size - len as u64) };
                let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                image[offset as usize..offset as usize + len].copy_from_slice(&bytes);
                end = offset + len as u64;
                if rng.bool() {
                    medium.write_at(offset, &bytes).unwrap();
                } else {
                    // Free space after the write: the rest of its block is zeroed when all free.
                    let free_after = [0, 1, 3000, 5000][rng.usize(0..4)].min(size - end);
                    medium.write_at_end(offset, &bytes, free_after).unwrap();
                    let zeroed = free_tail_bytes(offset, len, free_after, BLOCK_BYTES as u64);
                    image[end as usize..(end + zeroed) as usize].fill(0);
                }
            }
            let len = 9000.min(size as usize);
            let at = rng.u64(0..=size - len as u64);
            let mut buf = vec![0u8; len];
            medium.read_at(at, &mut buf).unwrap();
            assert_eq!(
                buf,
                image[at as usize..at as usize + len],
                "seed {seed} round {round}: staged bytes must read back"
            );
            if round % 3 == 0 {
                medium.persist().unwrap();
                let mut on_disk = vec![0u8; size as usize];
                File::open(dir.join("log.creating")).unwrap().read_exact_at(&mut on_disk, 0).unwrap();
                assert!(
                    on_disk == image,
                    "seed {seed} round {round}: the file holds exactly the written bytes after persist"
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        true
    }

    #[test]
    fn reads_match_a_byte_image_of_the_writes_before_and_after_persist() {
        matches_a_byte_image(4 << 20, 7, 40);
    }

    /// On a file of 32 blocks, read-ahead windows keep covering blocks that are staged or were
    /// just written: a stale cached copy of one would show here.
    #[test]
    fn a_small_file_keeps_matching_its_image_under_read_ahead() {
        for seed in 0..20 {
            if !matches_a_byte_image(32 * BLOCK_BYTES as u64, seed, 30) {
                return;
            }
        }
    }

    /// Appends continue the block the previous persist ended in without reading it back, and a
    /// persist with nothing new written issues no write.
    #[test]
    fn an_append_continues_the_tail_block_without_a_read() {
        let dir = scratch("tail");
        let file = open_or_create(&dir.join("log"), 1 << 20).unwrap();
        let Ok(mut medium) = DirectMedium::new(file) else { return };
        medium.write_at(4096 + 100, b"first").unwrap();
        medium.persist().unwrap();
        assert!(position(&medium.clean, 1).is_some(), "the block the group ended in stays cached");
        assert!(!medium.unsynced);
        medium.write_at(4096 + 105, b"second").unwrap();
        assert!(position(&medium.clean, 1).is_none(), "the cached block moved into the stage instead of being read");
        medium.persist().unwrap();
        let mut buf = [0u8; 11];
        medium.read_at(4096 + 100, &mut buf).unwrap();
        assert_eq!(&buf, b"firstsecond");
        medium.persist().unwrap();
        assert!(!medium.unsynced, "nothing written: nothing to sync");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An append that ends inside a block no one cached reads that block back first, unless the
    /// rest of the block is free: then it is zeroed instead, and appends read nothing.
    #[test]
    fn an_append_into_free_space_reads_nothing() {
        let dir = scratch("free");
        let file = open_or_create(&dir.join("log"), 1 << 20).unwrap();
        let Ok(mut medium) = DirectMedium::new(file) else { return };
        let before = medium.read_calls;
        for group in 0..40u64 {
            // Groups of 6 KiB: each ends in a block the previous one did not touch.
            let offset = 4096 + group * 6000;
            medium.write_at_end(offset, &[group as u8 + 1; 6000], 8192).unwrap();
            medium.persist().unwrap();
        }
        assert_eq!(medium.read_calls, before, "appends into free space read no block back");
        let mut buf = vec![0u8; 6000 + 100];
        medium.read_at(4096 + 39 * 6000, &mut buf).unwrap();
        assert_eq!(&buf[..6000], &[40u8; 6000][..]);
        assert!(buf[6000..].iter().all(|&b| b == 0), "the free rest of the last block is zeroed");
        medium.write_at(4096 + 40 * 6000 + 10_000, b"elsewhere").unwrap();
        assert_eq!(medium.read_calls, before + 1, "a write into an uncached block with live bytes around it reads it");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_size_that_is_not_whole_blocks_is_refused() {
        let dir = scratch("size");
        let file = open_or_create(&dir.join("log"), 4096 * 3 + 1).unwrap();
        let error = DirectMedium::new(file).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::Unsupported, "so that `file` falls back to pwrite");
        assert!(error.to_string().contains("not a whole number"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
