//! The raw frame reader on an arbitrary stream, delivered in arbitrary chunk sizes (pipes
//! return short reads): never panics, yields ⌊len / frame⌋ frames in order, then exactly one
//! "truncated" error when bytes are left over, then nothing.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use mcgate::input::frame::{PixelFormat, Raw, ReadError};

/// A reader that hands out at most `chunk` bytes per call.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let [w, h, fmt, chunk, stream @ ..] = data else {
        return;
    };
    let format = if fmt & 1 == 0 {
        PixelFormat::Gray
    } else {
        PixelFormat::Rgb24
    };
    let (w, h) = (u32::from(w % 32), u32::from(h % 32));
    let reader = Chunked {
        data: stream,
        chunk: usize::from(*chunk).max(1),
    };
    let raw = match Raw::new(reader, w, h, format) {
        Ok(raw) => raw,
        Err(_) => {
            assert!(w == 0 || h == 0, "{w}x{h} refused");
            return;
        }
    };
    let frame = raw.frame_bytes();
    let (whole, rest) = (stream.len() / frame, stream.len() % frame);
    let mut seen = 0;
    for (i, item) in raw.enumerate() {
        match item {
            Ok(f) => {
                assert!(i < whole && f.index == i as u64);
                assert_eq!((f.image.width(), f.image.height()), (w, h));
                let bytes = &stream[i * frame..(i + 1) * frame];
                assert_eq!(f.image.as_bytes(), bytes, "frame {i} is not its bytes");
            }
            Err(u) => {
                assert!(
                    i == whole
                        && rest > 0
                        && matches!(u.reason, ReadError::Truncated { got, .. } if got == rest),
                    "{u:?}"
                );
            }
        }
        seen += 1;
    }
    assert_eq!(seen, whole + usize::from(rest > 0));
});
