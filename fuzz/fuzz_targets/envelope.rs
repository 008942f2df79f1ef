//! Envelope encoding: decoding arbitrary stored octets never panics; an
//! envelope that decodes re-encodes and decodes to the same value; any
//! envelope relayq can hold survives encode → spool framing → decode
//! unchanged.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{
    BounceClass, ENVELOPE_VERSION, Envelope, Lane, Meta, Notify, Recipient, RecipientStatus, Ret,
};
use relayq_spool::fuzzing::{decode_envelope, encode_envelope};

fn notify(input: &mut Unstructured) -> Result<Notify> {
    Ok(Notify {
        success: input.arbitrary()?,
        failure: input.arbitrary()?,
        delay: input.arbitrary()?,
        never: input.arbitrary()?,
    })
}

fn recipient(input: &mut Unstructured) -> Result<Recipient> {
    Ok(Recipient {
        address: input.arbitrary()?,
        orcpt: input.arbitrary()?,
        notify: notify(input)?,
        status: *input.choose(&[
            RecipientStatus::Pending,
            RecipientStatus::Delivered,
            RecipientStatus::Deferred,
            RecipientStatus::Bounced,
        ])?,
        last_reply: input.arbitrary()?,
        class: match input.int_in_range(0..=BounceClass::ALL.len())? {
            0 => None,
            index => Some(BounceClass::ALL[index - 1]),
        },
    })
}

fn envelope(input: &mut Unstructured) -> Result<Envelope> {
    let recipients = input.arbitrary_len::<[u8; 8]>()?;
    Ok(Envelope {
        version: input.int_in_range(0..=ENVELOPE_VERSION)?,
        reverse_path: input.arbitrary()?,
        recipients: (0..recipients)
            .map(|_| recipient(input))
            .collect::<Result<_>>()?,
        lane: *input.choose(&Lane::ALL)?,
        arrival_ms: input.arbitrary()?,
        size: input.arbitrary()?,
        client_address: input.arbitrary()?,
        helo: input.arbitrary()?,
        auth_user: input.arbitrary()?,
        eight_bit_mime: input.arbitrary()?,
        smtputf8: input.arbitrary()?,
        ret: match input.int_in_range(0..=2u8)? {
            0 => None,
            1 => Some(Ret::Full),
            _ => Some(Ret::Headers),
        },
        envid: input.arbitrary()?,
        mt_priority: input.arbitrary()?,
        held: input.arbitrary()?,
        held_since_ms: input.arbitrary()?,
        held_ms: input.arbitrary()?,
        attempts: input.arbitrary()?,
        next_attempt_ms: input.arbitrary()?,
        delay_warned: input.arbitrary()?,
        meta: Meta::new(input.arbitrary()?),
        message_id: input.arbitrary()?,
        tls_report: input.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = Envelope::decode(data) {
        let encoded = decoded.encode();
        let again = Envelope::decode(&encoded).expect("an encoded envelope decodes");
        assert_eq!(again, decoded);
        assert_eq!(again.encode(), encoded, "the encoding is deterministic");
    }

    let Ok(generated) = envelope(&mut Unstructured::new(data)) else {
        return;
    };
    let stored = encode_envelope(&generated.encode());
    let payload = decode_envelope(&stored).expect("a framed envelope verifies");
    let decoded = Envelope::decode(payload).expect("an encoded envelope decodes");
    assert_eq!(decoded, generated);
});
