//! The two delivery lanes and how a message is assigned to one (DESIGN §5).

use std::fmt;

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// A delivery lane. Each lane has its own fixed number of delivery slots and
/// never lends them to the other, so bulk mail cannot delay transactional mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// Transactional mail: password resets, receipts.
    High,
    /// Bulk mail: newsletters, lists.
    Low,
}

impl Lane {
    /// DESIGN §5, first rule that decides wins: MT-PRIORITY (< 0 low, > 0
    /// high), then a bulk `Precedence:` header (low), then the listener's lane.
    pub fn select(mt_priority: Option<i8>, bulk_precedence: bool, listener_lane: Lane) -> Lane {
        match mt_priority {
            Some(priority) if priority < 0 => Lane::Low,
            Some(priority) if priority > 0 => Lane::High,
            _ if bulk_precedence => Lane::Low,
            _ => listener_lane,
        }
    }

    pub const ALL: [Lane; 2] = [Lane::High, Lane::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::High => "high",
            Lane::Low => "low",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lane {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Lane::High),
            "low" => Ok(Lane::Low),
            other => Err(format!("unknown lane `{other}`, expected `high` or `low`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_deciding_rule_wins() {
        assert_eq!(Lane::select(Some(-1), false, Lane::High), Lane::Low);
        assert_eq!(Lane::select(Some(3), true, Lane::Low), Lane::High);
        assert_eq!(Lane::select(Some(0), true, Lane::High), Lane::Low);
        assert_eq!(Lane::select(None, true, Lane::High), Lane::Low);
        assert_eq!(Lane::select(None, false, Lane::Low), Lane::Low);
        assert_eq!(Lane::select(None, false, Lane::High), Lane::High);
    }
}
