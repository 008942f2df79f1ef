//! The settings whose value is one of a few fixed words (`tls = "required"`).
//!
//! Each enum reads and displays as exactly the words written in the file, and
//! a wrong value or type is answered with the list of allowed words.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A unit enum spelled in the file as one of a fixed set of words.
trait Keyword: Copy + 'static {
    /// Every variant, in the order the error messages list them.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

/// `"a", "b" or "c"`.
fn allowed_words<K: Keyword>() -> String {
    let quoted: Vec<String> = K::ALL.iter().map(|k| format!("{:?}", k.as_str())).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn parse_keyword<K: Keyword>(text: &str) -> Result<K, String> {
    K::ALL
        .iter()
        .copied()
        .find(|keyword| keyword.as_str() == text)
        .ok_or_else(|| format!("unknown value {text:?}, expected {}", allowed_words::<K>()))
}

struct KeywordVisitor<K>(PhantomData<K>);

impl<K: Keyword> Visitor<'_> for KeywordVisitor<K> {
    type Value = K;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "one of {}", allowed_words::<K>())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<K, E> {
        parse_keyword(text).map_err(E::custom)
    }
}

/// Declares a keyword enum with `as_str`, `Display`, `FromStr` and
/// `Deserialize`, all using the words given for the variants.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];

            /// The word that selects this value in the configuration file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl Keyword for $name {
            const ALL: &'static [Self] = &$name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                parse_keyword(text)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(KeywordVisitor(PhantomData))
            }
        }
    };
}

keyword_enum! {
    /// `delivery.tls`: STARTTLS use for MX delivery.
    pub enum TlsPolicy {
        /// STARTTLS when offered, without certificate verification (RFC 7435).
        Opportunistic => "opportunistic",
        /// No delivery without STARTTLS; a server not offering it defers the mail.
        Required => "required",
        /// Never STARTTLS.
        Disabled => "disabled",
    }
}

keyword_enum! {
    /// `delivery.ip_version`: which address families to connect over.
    pub enum IpVersion {
        /// Both families, in resolver order.
        Any => "any",
        Ipv4 => "ipv4",
        Ipv6 => "ipv6",
        /// Both families, IPv4 addresses first.
        PreferIpv4 => "prefer_ipv4",
        /// Both families, IPv6 addresses first.
        PreferIpv6 => "prefer_ipv6",
    }
}

impl IpVersion {
    /// Whether both address families are looked up and used.
    pub fn both_families(self) -> bool {
        !matches!(self, IpVersion::Ipv4 | IpVersion::Ipv6)
    }
}

keyword_enum! {
    /// `route.tls`: how the connection to a smarthost is secured.
    pub enum RouteTls {
        /// Plain connection upgraded with STARTTLS, which is required.
        Starttls => "starttls",
        /// TLS from the first byte (RFC 8314), usually port 465.
        Implicit => "implicit",
        /// Never TLS.
        None => "none",
    }
}

keyword_enum! {
    /// `listener.tls`: TLS on an intake listener.
    pub enum ListenerTls {
        /// Plain SMTP only.
        None => "none",
        /// Plain SMTP upgraded by the client's STARTTLS (RFC 3207).
        Starttls => "starttls",
        /// TLS from the first byte (RFC 8314), usually port 465.
        Implicit => "implicit",
    }
}

keyword_enum! {
    /// `listener.auth`: SMTP AUTH (RFC 4954) on an intake listener; offered
    /// only once the session is under TLS.
    pub enum ListenerAuth {
        /// AUTH is not offered.
        None => "none",
        /// Clients may authenticate; those that do may relay from anywhere.
        Optional => "optional",
        /// MAIL is refused until the client authenticated.
        Required => "required",
    }
}

keyword_enum! {
    /// `log.format`.
    pub enum LogFormat {
        /// One Postfix-like line per event.
        Text => "text",
        /// One JSON object per line.
        Json => "json",
    }
}
