//! DATA framing: never panics; consumes input monotonically (never more than
//! it was given, all of it until the end of data, which is `.CRLF`); the
//! result does not depend on how the input was split into chunks; the output
//! never contains a bare LF (every LF is preceded by CR). The same holds for
//! BDAT's line-ending normalisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{DataReader, LineEndings};

fn assert_no_bare_lf(bytes: &[u8]) {
    for (index, byte) in bytes.iter().enumerate() {
        if *byte == b'\n' {
            assert!(index > 0 && bytes[index - 1] == b'\r', "bare LF at {index}");
        }
    }
}

/// BDAT content in `chunks`, normalised.
fn normalise<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut line_endings = LineEndings::default();
    let mut out = Vec::new();
    for chunk in chunks {
        line_endings.normalise(chunk, &mut out);
    }
    out
}

/// Feeds `chunks` in order; returns the bytes consumed in total, whether the
/// end of data was seen, and the message content.
fn receive<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (usize, bool, Vec<u8>) {
    let mut reader = DataReader::new();
    let mut out = Vec::new();
    let mut total = 0;
    for chunk in chunks {
        let (consumed, finished) = reader.feed(chunk, &mut out);
        assert!(consumed <= chunk.len(), "consumed more than given");
        total += consumed;
        if finished {
            return (total, true, out);
        }
        assert_eq!(consumed, chunk.len(), "stopped short of the end of data");
    }
    (total, false, out)
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let whole = receive(std::iter::once(data));
    let chunked = receive(data.chunks(split));
    let bytewise = receive(data.chunks(1));
    assert_eq!(whole, chunked, "chunks of {split} change the result");
    assert_eq!(whole, bytewise, "single bytes change the result");

    let (consumed, finished, out) = whole;
    if finished {
        assert!(data[..consumed].ends_with(b".\r\n"), "ended without .CRLF");
    }
    assert_no_bare_lf(&out);

    let normalised = normalise(std::iter::once(data));
    assert_eq!(normalised, normalise(data.chunks(split)));
    assert_no_bare_lf(&normalised);
});
