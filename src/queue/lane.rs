//! The two delivery lanes and how a message is assigned to one.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// The first rule that decides wins: MT-PRIORITY (< 0 low, > 0
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

/// One value per lane, indexed by [`Lane`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PerLane<T>([T; 2]);

impl<T> PerLane<T> {
    /// A value for each lane, made by `make`.
    pub fn from_fn(mut make: impl FnMut(Lane) -> T) -> PerLane<T> {
        PerLane([make(Lane::High), make(Lane::Low)])
    }

    /// Each lane with its value, in [`Lane::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Lane, &T)> {
        Lane::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> Index<Lane> for PerLane<T> {
    type Output = T;

    fn index(&self, lane: Lane) -> &T {
        &self.0[lane as usize]
    }
}

impl<T> IndexMut<Lane> for PerLane<T> {
    fn index_mut(&mut self, lane: Lane) -> &mut T {
        &mut self.0[lane as usize]
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

    #[test]
    fn per_lane_values_are_kept_apart() {
        let mut counts = PerLane::from_fn(|lane| if lane == Lane::High { 10 } else { 20 });
        counts[Lane::Low] += 1;
        assert_eq!(counts[Lane::High], 10);
        assert_eq!(counts[Lane::Low], 21);
        let listed: Vec<(Lane, i32)> = counts.iter().map(|(lane, n)| (lane, *n)).collect();
        assert_eq!(listed, vec![(Lane::High, 10), (Lane::Low, 21)]);
    }
}
