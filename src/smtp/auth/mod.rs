//! SMTP AUTH on intake (RFC 4954): the users file and password checks
//! (`users`), the SASL exchanges (`sasl`), and the budgets of failed
//! attempts per client network, user name and in total (`failures`, keyed
//! by `network`). The session drives them in `session/auth.rs`.

pub(crate) mod failures;
pub(crate) mod network;
pub(crate) mod sasl;
pub(crate) mod users;

pub use failures::AuthFailures;
pub use users::Users;
