//! Cutting a stream into content-defined chunks (FastCDC 2020).

use std::io;

use super::Params;

/// FastCDC over a stream pushed to it piece by piece: the same cut points as over the whole
/// content at once, because a cut is only made once `max_size` bytes (or the end) are buffered.
pub struct Chunker {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    buffer: Vec<u8>,
}

impl Chunker {
    pub fn new(params: &Params) -> Self {
        let (mask_s, mask_l) =
            fastcdc::v2020::select_masks(params.avg_size, fastcdc::v2020::Normalization::Level1);
        Chunker {
            min_size: params.min_size,
            avg_size: params.avg_size,
            max_size: params.max_size,
            mask_s,
            mask_l,
            buffer: Vec::with_capacity(2 * params.max_size),
        }
    }

    /// Adds `data`; `emit` gets every chunk that is now complete, in order.
    pub fn push(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.buffer.extend_from_slice(data);
        self.cut_while(|buffered, max| buffered >= max, emit)
    }

    /// The end of the content: `emit` gets the remaining chunks.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.cut_while(|buffered, _| buffered > 0, emit)
    }

    fn cut_while(
        &mut self,
        more: impl Fn(usize, usize) -> bool,
        emit: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut start = 0;
        while more(self.buffer.len() - start, self.max_size) {
            let window = &self.buffer[start..];
            let (_, len) = fastcdc::v2020::cut(
                window,
                self.min_size,
                self.avg_size,
                self.max_size,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
            );
            emit(&window[..len])?;
            start += len;
        }
        self.buffer.drain(..start);
        Ok(())
    }
}
