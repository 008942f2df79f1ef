//! Where a domain wants its reports: the `_smtp._tls` TXT record (RFC 8460
//! §3), parsed by mail-auth, and its `rua` URIs sorted into the addresses
//! to mail and the URLs to post to. Pure.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};

/// Destinations used per report; a record naming more is cut to its first
/// ones (each is a message recipient or a POST).
pub const MAX_DESTINATIONS: usize = 10;

/// The report destinations of one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rua {
    /// `mailto:` addresses (percent-decoded, without `?` fields), in record
    /// order, without repeats.
    pub mail: Vec<String>,
    /// `https:` URLs, in record order, without repeats.
    pub https: Vec<String>,
}

/// Why a domain gets no report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuaError {
    #[error("no v=TLSRPTv1 TXT record")]
    NoRecord,
    #[error("{0} v=TLSRPTv1 TXT records (exactly one is allowed)")]
    SeveralRecords(usize),
    #[error("the v=TLSRPTv1 TXT record is not valid: {0:?}")]
    Invalid(String),
    #[error("the v=TLSRPTv1 TXT record names no usable mailto: or https: URI: {0:?}")]
    NoDestination(String),
}

/// The `rua` of a domain's `_smtp._tls` TXT records (each record's strings
/// joined): records not starting with `v=TLSRPTv1` are ignored; exactly
/// one must remain, and be valid (RFC 8460 §3).
pub fn parse<S: AsRef<str>>(records: &[S]) -> Result<Rua, RuaError> {
    let candidates: Vec<&str> = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|record| {
            record.strip_prefix("v=TLSRPTv1").is_some_and(|rest| {
                let rest = rest.trim_start_matches([' ', '\t']);
                rest.is_empty() || rest.starts_with(';')
            })
        })
        .collect();
    let record = match candidates.as_slice() {
        [] => return Err(RuaError::NoRecord),
        [record] => *record,
        several => return Err(RuaError::SeveralRecords(several.len())),
    };
    let parsed =
        TlsRpt::parse(record.as_bytes()).map_err(|_| RuaError::Invalid(record.to_owned()))?;
    let mut rua = Rua::default();
    for uri in parsed.rua {
        if rua.mail.len() + rua.https.len() == MAX_DESTINATIONS {
            break;
        }
        match uri {
            ReportUri::Mail(address) => {
                if let Some(address) = mail_address(&address)
                    && !rua.mail.contains(&address)
                {
                    rua.mail.push(address);
                }
            }
            ReportUri::Http(url) => {
                if is_https_url(&url) && !rua.https.contains(&url) {
                    rua.https.push(url);
                }
            }
        }
    }
    if rua.mail.is_empty() && rua.https.is_empty() {
        return Err(RuaError::NoDestination(record.to_owned()));
    }
    Ok(rua)
}

/// The address of a `mailto:` URI's path (RFC 6068): `?` fields dropped,
/// percent-encoding decoded; `None` unless it is one `local@domain`
/// address fit for a RCPT TO.
fn mail_address(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let address = percent_decode(path)?;
    let (local, domain) = address.rsplit_once('@')?;
    let usable = !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && address.len() <= 254
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'));
    usable.then_some(address)
}

/// `%XX` sequences decoded; `None` for a malformed one or a result that is
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn is_https_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| {
        url.scheme() == "https"
            && url.host_str().is_some_and(|host| !host.is_empty())
            && url.username().is_empty()
            && url.password().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rua(mail: &[&str], https: &[&str]) -> Rua {
        Rua {
            mail: mail.iter().map(|s| s.to_string()).collect(),
            https: https.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_examples_of_rfc_8460() {
        assert_eq!(
            parse(&["v=TLSRPTv1;rua=mailto:reports@example.com"]),
            Ok(rua(&["reports@example.com"], &[]))
        );
        assert_eq!(
            parse(&["v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt"]),
            Ok(rua(&[], &["https://reporting.example.com/v1/tlsrpt"]))
        );
        assert_eq!(
            parse(&["v=TLSRPTv1; rua=mailto:tlsrpt@mydomain.com,https://tlsrpt.mydomain.com/v1"]),
            Ok(rua(
                &["tlsrpt@mydomain.com"],
                &["https://tlsrpt.mydomain.com/v1"]
            ))
        );
    }

    #[test]
    fn other_records_are_ignored_and_one_must_remain() {
        let records = [
            "v=spf1 -all",
            "v=TLSRPTv1 ; rua=mailto:a@example.com ; ext=1;",
            "google-site-verification=x",
        ];
        assert_eq!(parse(&records), Ok(rua(&["a@example.com"], &[])));
        assert_eq!(parse::<&str>(&[]), Err(RuaError::NoRecord));
        assert_eq!(parse(&["v=spf1 -all"]), Err(RuaError::NoRecord));
        assert_eq!(
            parse(&["v=TLSRPTv10; rua=mailto:a@example.com"]),
            Err(RuaError::NoRecord)
        );
        assert_eq!(
            parse(&[
                "v=TLSRPTv1; rua=mailto:a@example.com",
                "v=TLSRPTv1; rua=mailto:b@example.com"
            ]),
            Err(RuaError::SeveralRecords(2))
        );
    }

    #[test]
    fn unusable_uris_are_dropped() {
        assert_eq!(
            parse(&[
                "v=TLSRPTv1; rua=mailto:tls%2Breports@example.com?subject=x,https://r.example/a"
            ]),
            Ok(rua(&["tls+reports@example.com"], &["https://r.example/a"]))
        );
        assert!(matches!(
            parse(&["v=TLSRPTv1; rua=http://r.example/a"]),
            Err(RuaError::Invalid(_) | RuaError::NoDestination(_))
        ));
        assert!(matches!(
            parse(&["v=TLSRPTv1; rua=mailto:nobody"]),
            Err(RuaError::NoDestination(_))
        ));
        assert!(parse(&["v=TLSRPTv1;"]).is_err());
        assert!(parse(&["v=TLSRPTv1"]).is_err());
    }

    #[test]
    fn destinations_are_deduplicated_and_bounded() {
        let many: Vec<String> = (0..MAX_DESTINATIONS + 5)
            .map(|n| format!("mailto:r{n}@example.com"))
            .collect();
        let record = format!("v=TLSRPTv1; rua=mailto:r0@example.com,{}", many.join(","));
        let parsed = parse(&[record]).unwrap();
        assert_eq!(parsed.mail.len(), MAX_DESTINATIONS);
        assert_eq!(parsed.mail[0], "r0@example.com");
        assert_eq!(parsed.mail[1], "r1@example.com");
    }
}
