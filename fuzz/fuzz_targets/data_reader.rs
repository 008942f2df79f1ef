//! DATA framing: never panics, consumes input monotonically, and the output
//! never contains a bare LF (every LF is preceded by CR).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::smtp::data::DataReader;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut reader = DataReader::new();
    let mut out = Vec::new();
    for chunk in data.chunks(split) {
        let (consumed, finished) = reader.feed(chunk, &mut out);
        assert!(consumed <= chunk.len());
        if finished {
            break;
        }
    }
    for (index, byte) in out.iter().enumerate() {
        if *byte == b'\n' {
            assert!(index > 0 && out[index - 1] == b'\r', "bare LF in output");
        }
    }
});
