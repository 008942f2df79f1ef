//! The import and export format (pure): one address per line, or CSV lines
//! `address,class,reason` (RFC 4180 quoting: a field in double quotes may
//! hold commas, a doubled quote stands for one). Blank lines, `#` comments
//! and a header line `address,class,reason` are skipped; an unquoted
//! reason is the rest of the line, commas included. `export` writes the
//! header and one line per entry, which `import` reads back as it was.

use crate::smtp::address::parse_forward_path;

/// The header line `export` writes and `import` skips.
pub const HEADER: &str = "address,class,reason";

/// One line of an import file, checked: an address with a domain, and the
/// class and reason as written (the class is checked by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLine {
    pub address: String,
    /// `None`: the line gives none (a bare address, or an empty field).
    pub class: Option<String>,
    pub reason: String,
}

/// Parses one line; `Ok(None)` for a line to skip. The error says what is
/// wrong with the line, for a message naming the file and line number.
pub fn parse_line(line: &str) -> Result<Option<ImportLine>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.eq_ignore_ascii_case(HEADER) {
        return Ok(None);
    }
    let mut fields = Fields { rest: trimmed };
    let address = fields.next()?.unwrap_or_default();
    let class = fields.next()?.filter(|class| !class.is_empty());
    let reason = fields.rest()?;
    check_address(&address)?;
    Ok(Some(ImportLine {
        address,
        class,
        reason,
    }))
}

/// An address relayq can suppress: a mailbox with a domain (RFC 5321 path
/// syntax, internationalised addresses allowed).
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("no address".to_owned());
    }
    let mailbox = parse_forward_path(address, true)
        .map_err(|error| format!("{address:?} is not an email address: {error}"))?;
    if mailbox.domain.is_none() {
        return Err(format!(
            "{address:?} has no domain: write it as user@domain"
        ));
    }
    Ok(())
}

/// One export line (with its line feed).
pub fn export_line(address: &str, class: &str, reason: &str) -> String {
    format!("{},{},{}\n", quoted(address), quoted(class), quoted(reason))
}

/// A field as CSV needs it: in quotes when it holds a comma, a quote, or
/// space at either end (which an unquoted field loses).
fn quoted(field: &str) -> String {
    let needs_quotes = field.contains([',', '"'])
        || field.starts_with(char::is_whitespace)
        || field.ends_with(char::is_whitespace);
    if needs_quotes {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

struct Fields<'a> {
    rest: &'a str,
}

impl Fields<'_> {
    /// The next comma-separated field; `None` after the last.
    fn next(&mut self) -> Result<Option<String>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let text = self.rest.trim_start();
        if let Some(inner) = text.strip_prefix('"') {
            let (field, after) = unquote(inner)?;
            if after.starts_with('@') {
                // Not CSV quoting but an address with a quoted local part
                // (RFC 5321 `"john doe"@example.org`), written as it is.
                let end = unquoted_comma(text).unwrap_or(text.len());
                self.rest = text.get(end + 1..).unwrap_or_default();
                return Ok(Some(text[..end].trim().to_owned()));
            }
            let after = after.trim_start();
            self.rest = match after.strip_prefix(',') {
                Some(rest) => rest,
                None if after.is_empty() => "",
                None => return Err("text after a closing quote (a field is \"...\")".to_owned()),
            };
            return Ok(Some(field));
        }
        let (field, rest) = text.split_once(',').unwrap_or((text, ""));
        self.rest = rest;
        Ok(Some(field.trim().to_owned()))
    }

    /// The last field: the rest of the line, commas included unless quoted.
    fn rest(&mut self) -> Result<String, String> {
        let text = self.rest.trim();
        if let Some(inner) = text.strip_prefix('"') {
            let (field, after) = unquote(inner)?;
            if !after.trim().is_empty() {
                return Err("text after the closing quote of the reason".to_owned());
            }
            return Ok(field);
        }
        Ok(text.to_owned())
    }
}

/// The first comma of `text` outside a quoted string (backslash escapes
/// inside one, as RFC 5321's quoted-string has them).
fn unquoted_comma(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return Some(at),
            _ => {}
        }
    }
    None
}

/// The content of a quoted field whose opening quote is gone, and what
/// follows its closing quote.
fn unquote(inner: &str) -> Result<(String, &str), String> {
    let mut field = String::new();
    let mut chars = inner.char_indices();
    while let Some((at, character)) = chars.next() {
        if character != '"' {
            field.push(character);
            continue;
        }
        if inner[at + 1..].starts_with('"') {
            field.push('"');
            chars.next();
            continue;
        }
        return Ok((field, &inner[at + 1..]));
    }
    Err("a quoted field is not closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(address: &str, class: Option<&str>, reason: &str) -> Option<ImportLine> {
        Some(ImportLine {
            address: address.into(),
            class: class.map(str::to_owned),
            reason: reason.into(),
        })
    }

    #[test]
    fn bare_addresses_and_csv_lines() {
        assert_eq!(
            parse_line("user@example.org\n"),
            Ok(line("user@example.org", None, ""))
        );
        assert_eq!(
            parse_line(" a@example.org , mailbox_full , full, for good \r\n"),
            Ok(line(
                "a@example.org",
                Some("mailbox_full"),
                "full, for good"
            ))
        );
        assert_eq!(
            parse_line("a@example.org,,why"),
            Ok(line("a@example.org", None, "why"))
        );
        assert_eq!(
            parse_line("\"q,uoted\"@example.org,admin,\"say \"\"no\"\"\""),
            Ok(line("\"q,uoted\"@example.org", Some("admin"), "say \"no\""))
        );
        assert_eq!(
            parse_line("\"john doe\"@example.org"),
            Ok(line("\"john doe\"@example.org", None, ""))
        );
        assert_eq!(
            parse_line("\"\"\"x,y\"\"@example.org\",admin,"),
            Ok(line("\"x,y\"@example.org", Some("admin"), ""))
        );
        for skipped in [
            "",
            "   ",
            "# comment",
            "address,class,reason",
            "Address,Class,Reason",
        ] {
            assert_eq!(parse_line(skipped), Ok(None), "{skipped:?}");
        }
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(
            parse_line("not an address")
                .unwrap_err()
                .contains("not an email address")
        );
        assert!(parse_line("root").unwrap_err().contains("no domain"));
        assert!(parse_line(",admin,x").unwrap_err().contains("no address"));
        assert!(
            parse_line("a@example.org,\"admin")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(parse_line("a@example.org,admin,\"x\" y").is_err());
    }

    #[test]
    fn export_lines_read_back_as_written() {
        let cases = [
            (
                "a@example.org",
                "invalid_recipient",
                "550 5.1.1 no such user",
            ),
            ("b@example.org", "admin", "said \"stop\", twice"),
            ("c@example.org", "admin", ""),
            ("\"x,y\"@example.org", "admin", " padded "),
        ];
        for (address, class, reason) in cases {
            let text = export_line(address, class, reason);
            assert!(text.ends_with('\n'));
            assert_eq!(
                parse_line(&text),
                Ok(line(address, Some(class), reason)),
                "{text}"
            );
        }
    }
}
