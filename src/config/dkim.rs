//! `[[dkim]]`: which mail is signed with which key (docs/mail-authentication.md). The key
//! files are read by `crate::dkim::Signers::load`, not here, so that a
//! reload can re-read them from the same validated settings.

use std::path::PathBuf;

use super::Invalid;
use super::raw::RawDkim;
use super::values::check_domain_name;

/// One `[[dkim]]` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimSettings {
    /// Lowercase, without a trailing dot: mail whose From: address is in this
    /// domain or a subdomain of it is signed, with `d=` this domain.
    pub domain: String,
    /// The `s=` tag: the key record is `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// A PEM file: PKCS#8 or PKCS#1, RSA of at least 1024 bits or Ed25519.
    pub private_key: PathBuf,
    /// Header field names to sign, as written; `None`: the RFC 6376 §5.4.1
    /// set. Contains `From` (RFC 6376 §5.4 requires signing it).
    pub headers: Option<Vec<String>>,
}

pub(super) fn dkim(raw: Vec<RawDkim>) -> Result<Vec<DkimSettings>, Invalid> {
    let mut settings: Vec<DkimSettings> = Vec::with_capacity(raw.len());
    for (index, block) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("dkim[{index}].{field}");
        let domain = block
            .domain
            .ok_or_else(|| Invalid::new(key("domain"), "required"))?
            .to_ascii_lowercase();
        let domain = domain.strip_suffix('.').unwrap_or(&domain).to_string();
        check_domain_name(&domain).map_err(|reason| Invalid::new(key("domain"), reason))?;
        let selector = block
            .selector
            .ok_or_else(|| Invalid::new(key("selector"), "required"))?;
        check_selector(&selector).map_err(|reason| Invalid::new(key("selector"), reason))?;
        if let Some(earlier) = settings
            .iter()
            .position(|other| other.domain == domain && other.selector == selector)
        {
            return Err(Invalid::new(
                key("selector"),
                format!("{domain} with selector {selector:?} is already dkim[{earlier}]"),
            ));
        }
        let private_key = block
            .private_key
            .ok_or_else(|| Invalid::new(key("private_key"), "required"))?;
        if private_key.as_os_str().is_empty() {
            return Err(Invalid::new(key("private_key"), "must not be empty"));
        }
        let headers = match block.headers {
            Some(names) => {
                for (position, name) in names.iter().enumerate() {
                    check_field_name(name).map_err(|reason| {
                        Invalid::new(format!("dkim[{index}].headers[{position}]"), reason)
                    })?;
                }
                if !names.iter().any(|name| name.eq_ignore_ascii_case("From")) {
                    return Err(Invalid::new(
                        key("headers"),
                        "must include \"From\": RFC 6376 §5.4 requires signing it",
                    ));
                }
                Some(names)
            }
            None => None,
        };
        settings.push(DkimSettings {
            domain,
            selector,
            private_key,
            headers,
        });
    }
    Ok(settings)
}

/// RFC 6376 §3.1: a selector is one or more dot-separated labels.
fn check_selector(selector: &str) -> Result<(), String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
    };
    if selector.split('.').all(valid_label) {
        Ok(())
    } else {
        Err(format!(
            "{selector:?} is not a selector: dot-separated labels of letters, digits, '-' and '_'"
        ))
    }
}

/// RFC 5322 §3.6.8: a field name is printable ASCII other than ':'.
fn check_field_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|byte| (33..=126).contains(&byte) && byte != b':')
    {
        Ok(())
    } else {
        Err(format!("{name:?} is not a header field name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_field_names() {
        assert!(check_selector("relay2026").is_ok());
        assert!(check_selector("a.b-c_d").is_ok());
        assert!(check_selector("").is_err());
        assert!(check_selector("a..b").is_err());
        assert!(check_selector("a b").is_err());
        assert!(check_field_name("List-Unsubscribe").is_ok());
        assert!(check_field_name("Subject:").is_err());
        assert!(check_field_name("").is_err());
    }
}
