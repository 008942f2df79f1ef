//! Where mail goes next, and whose limits it is under: a next hop (a
//! recipient domain's MX hosts, or a configured route) and the key of a
//! destination (a `[[destination]]` rule, or a next hop without one).

use std::sync::Arc;

use crate::config::Route;

/// Where mail goes next: a recipient domain's MX hosts, or a configured
/// route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    Mx(String),
    Route(RouteHop),
}

/// A configured route as a next hop, known by identity rather than by its
/// place in the file: after a reload that changes a route, no connection
/// or memory of the old one is used for it. `Live::build` keeps the same
/// `Arc` for a route a reload left as it was, so its connections and
/// limits carry over. Identity also keeps hashing a job's next hop as
/// cheap as hashing an index.
#[derive(Debug, Clone)]
pub struct RouteHop(pub Arc<Route>);

impl PartialEq for RouteHop {
    fn eq(&self, other: &RouteHop) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RouteHop {}

impl std::hash::Hash for RouteHop {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl std::ops::Deref for RouteHop {
    type Target = Route;

    fn deref(&self) -> &Route {
        &self.0
    }
}

/// What limits are kept for: a `[[destination]]` rule (by name, which
/// stays the same across reloads), or a next hop without a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DestinationKey {
    Rule(Arc<str>),
    Hop(NextHop),
}

impl DestinationKey {
    /// A rule's destination: few, named in the configuration (metrics give
    /// each its own series).
    pub fn is_rule(&self) -> bool {
        matches!(self, DestinationKey::Rule(_))
    }

    /// The name in metrics, stats, logs and Redis keys.
    pub fn label(&self) -> String {
        match self {
            DestinationKey::Rule(name) => name.to_string(),
            DestinationKey::Hop(NextHop::Mx(domain)) => domain.clone(),
            DestinationKey::Hop(NextHop::Route(route)) => format!("route:{}", route.host),
        }
    }
}
