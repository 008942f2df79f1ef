//! The control API's HTTP/1.1 parsing: request heads, response heads and
//! chunk sizes from arbitrary octets never panic; `head_end` points just past
//! the first blank line; an accepted request never announces a body over the
//! limit; percent-decoding keeps every `%` that does not start two hex
//! digits and inverts percent-encoding; a request built the way the `queue`
//! client builds one parses back to the path and query it was built from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{
    MAX_BODY, head_end, parse_chunk_size, parse_request, parse_response, percent_decode,
    percent_encode,
};

/// RFC 3986 §2.1 decoding, plus `+` as a space (form encoding), with
/// invalid escapes kept as they are: the reference `percent_decode` must
/// agree with.
fn reference_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escape = bytes
            .get(at + 1..at + 3)
            .filter(|digits| bytes[at] == b'%' && digits.iter().all(u8::is_ascii_hexdigit));
        match escape {
            Some(digits) => {
                let hex = std::str::from_utf8(digits).expect("hex digits are ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                at += 3;
            }
            None => {
                out.push(if bytes[at] == b'+' { b' ' } else { bytes[at] });
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fuzz_target!(|data: &[u8]| {
    if let Some(end) = head_end(data) {
        assert!(end <= data.len());
        assert!(data[..end].ends_with(b"\r\n\r\n"));
        assert!(
            !data[..end - 1]
                .windows(4)
                .any(|window| window == b"\r\n\r\n"),
            "not the first blank line"
        );
    }
    match parse_request(data) {
        Ok(request) => {
            assert!(request.content_length <= MAX_BODY);
            assert!(!request.method.is_empty());
        }
        Err(error) => drop(error.to_string()),
    }
    let _ = parse_response(data);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_chunk_size(text);
    assert_eq!(percent_decode(text), reference_decode(text));
    assert_eq!(percent_decode(&percent_encode(text)), text);

    let mut pieces = text.splitn(3, '\n');
    let (id, name, value) = (
        pieces.next().unwrap_or_default(),
        pieces.next().unwrap_or_default(),
        pieces.next().unwrap_or_default(),
    );
    let head = format!(
        "GET /queue/{}?{}={}&body=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        percent_encode(id),
        percent_encode(name),
        percent_encode(value)
    );
    assert_eq!(head_end(head.as_bytes()), Some(head.len()));
    let request = parse_request(head.as_bytes()).expect("a request the client builds parses");
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, format!("/queue/{id}"));
    let expected = [
        (name.to_owned(), value.to_owned()),
        ("body".to_owned(), "1".to_owned()),
    ];
    assert_eq!(request.query, expected);
});
