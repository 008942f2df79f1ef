//! Maildrop files: parsing arbitrary file contents never panics; a parsed
//! file has a sender and at least one recipient; what parses and can be
//! written again parses back to the same value; whatever `encode` agrees to
//! write, `parse` reads back unchanged (a file sendmail writes is never one
//! the daemon must set aside).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{Dropped, Submission, encode_maildrop, parse_maildrop};

fn dropped(input: &mut Unstructured) -> Result<Dropped> {
    Ok(Dropped {
        submission: Submission {
            sender: input.arbitrary()?,
            recipients: input.arbitrary()?,
            notify: input.arbitrary()?,
        },
        user: input.arbitrary()?,
        message: input.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    match parse_maildrop(data) {
        Ok(parsed) => {
            assert!(!parsed.submission.recipients.is_empty());
            if let Ok(encoded) = encode_maildrop(&parsed) {
                assert_eq!(parse_maildrop(&encoded), Ok(parsed));
            }
        }
        Err(error) => drop(error.to_string()),
    }

    if let Ok(generated) = dropped(&mut Unstructured::new(data))
        && let Ok(encoded) = encode_maildrop(&generated)
    {
        assert_eq!(parse_maildrop(&encoded), Ok(generated));
    }
});
