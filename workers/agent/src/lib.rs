//! The agent side of synthfleet: the scaffolds (`bash`, `edit`), one rollout from sandbox
//! creation to verified record, and the worker loop that drains a queue.
//!
//! **Architecture invariant:** this crate knows the ports of `synthfleet-core` only; it
//! never names Docker, redb, HTTP or AWS. The same code runs locally and in the fleet.

mod campaigns;
mod context;
mod gold;
mod rollout;
mod scaffold;
#[cfg(test)]
mod testing;
mod verify;
mod worker;

pub use campaigns::{CampaignSource, ResolveError, SingleCampaign, StoredCampaigns};
pub use gold::{GoldEvent, validate_gold};
pub use rollout::{Interrupted, RolloutEvent, Rollouts};
pub use scaffold::{Action, SCAFFOLDS, Scaffold, Tool, scaffold};
pub use verify::{SetupStep, Verifier, VerifyError};
pub use worker::{Worker, WorkerConfig, WorkerEvent, WorkerSummary};

/// Version of the built-in scaffold, recorded in every trajectory.
pub const SCAFFOLD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Cuts `text` to at most `max` characters, keeping head and tail around a marker.
pub fn truncate_middle(text: &str, max: usize) -> (String, bool) {
    let count = text.chars().count();
    if count <= max {
        return (text.to_owned(), false);
    }
    let half = max / 2;
    let head: String = text.chars().take(half).collect();
    let tail: String = text.chars().skip(count - half).collect();
    (
        format!(
            "{head}\n[... {} characters truncated ...]\n{tail}",
            count - 2 * half
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncates_in_the_middle() {
        assert_eq!(super::truncate_middle("abc", 5), ("abc".to_owned(), false));
        let (out, cut) = super::truncate_middle("0123456789", 4);
        assert!(cut);
        assert_eq!(out, "01\n[... 6 characters truncated ...]\n89");
    }
}
