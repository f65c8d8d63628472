//! Money as integer micro-dollars, so that ledger arithmetic is exact and comparable
//! across processes and stores.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of US dollars in millionths (1 = $0.000001).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    pub const ZERO: MicroUsd = MicroUsd(0);

    /// Converts dollars to micro-dollars, rounding up so that estimates never undercount.
    pub fn from_usd_ceil(usd: f64) -> MicroUsd {
        if !usd.is_finite() || usd <= 0.0 {
            return MicroUsd::ZERO;
        }
        MicroUsd((usd * 1e6).ceil() as u64)
    }

    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1e6
    }

    pub fn saturating_add(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.4}", self.as_usd())
    }
}

impl std::iter::Sum for MicroUsd {
    fn sum<I: Iterator<Item = MicroUsd>>(iter: I) -> MicroUsd {
        iter.fold(MicroUsd::ZERO, MicroUsd::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_and_formats() {
        assert_eq!(MicroUsd::from_usd_ceil(0.0000011), MicroUsd(2));
        assert_eq!(MicroUsd::from_usd_ceil(-1.0), MicroUsd::ZERO);
        assert_eq!(MicroUsd::from_usd_ceil(f64::NAN), MicroUsd::ZERO);
        assert_eq!(MicroUsd(1_500_000).to_string(), "$1.5000");
    }
}
