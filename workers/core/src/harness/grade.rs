//! Grading: from the statuses a test log gives to resolved or not, as SWE-bench's
//! `harness/grading` decides it.

use super::logs::TestStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a skipped test counts. The harnesses differ here, and each is reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipRule {
    /// SWE-bench today: a skipped FAIL_TO_PASS test failed, a skipped PASS_TO_PASS test
    /// is maintained (passed).
    FailToPassFails,
    /// SWE-bench before its `test_maintained` change, its SWE-rebench fork and SWE-smith:
    /// a skipped test counts neither as passed nor as failed.
    Uncounted,
}

/// The tests of one list (FAIL_TO_PASS or PASS_TO_PASS) that passed and that failed.
/// A test counts as passed when the log says PASSED or XFAIL, as failed when the log says
/// FAILED or ERROR or does not mention it; a skipped one as its [`SkipRule`] says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSplit {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
}

impl TestSplit {
    fn of(
        tests: &[String],
        statuses: &BTreeMap<String, TestStatus>,
        skipped: Option<bool>,
    ) -> TestSplit {
        let mut split = TestSplit::default();
        for test in tests {
            let passed = match statuses.get(test) {
                Some(TestStatus::Passed | TestStatus::Xfail) => Some(true),
                None | Some(TestStatus::Failed | TestStatus::Error) => Some(false),
                Some(TestStatus::Skipped) => skipped,
            };
            match passed {
                Some(true) => split.passed.push(test.clone()),
                Some(false) => split.failed.push(test.clone()),
                None => {}
            }
        }
        split
    }

    /// Share of the counted tests that passed; 1 when none counted (SWE-bench's
    /// `compute_fail_to_pass` / `compute_pass_to_pass`).
    pub fn score(&self) -> f64 {
        let total = self.passed.len() + self.failed.len();
        if total == 0 {
            1.0
        } else {
            self.passed.len() as f64 / total as f64
        }
    }
}

/// SWE-bench's `ResolvedStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Every FAIL_TO_PASS and every PASS_TO_PASS test passes: resolved.
    Full,
    /// Some but not all FAIL_TO_PASS tests pass and every PASS_TO_PASS test passes.
    Partial,
    No,
}

/// The grade of one verification run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub fail_to_pass: TestSplit,
    pub pass_to_pass: TestSplit,
    pub resolution: Resolution,
}

impl Grade {
    /// Grades the statuses a log gave against the task's two lists.
    pub fn of(
        fail_to_pass: &[String],
        pass_to_pass: &[String],
        statuses: &BTreeMap<String, TestStatus>,
        skips: SkipRule,
    ) -> Grade {
        let (f2p_skipped, p2p_skipped) = match skips {
            SkipRule::FailToPassFails => (Some(false), Some(true)),
            SkipRule::Uncounted => (None, None),
        };
        let fail_to_pass = TestSplit::of(fail_to_pass, statuses, f2p_skipped);
        let pass_to_pass = TestSplit::of(pass_to_pass, statuses, p2p_skipped);
        let (f2p, p2p) = (fail_to_pass.score(), pass_to_pass.score());
        let resolution = if f2p == 1.0 && p2p == 1.0 {
            Resolution::Full
        } else if f2p < 1.0 && f2p > 0.0 && p2p == 1.0 {
            Resolution::Partial
        } else {
            Resolution::No
        };
        Grade {
            fail_to_pass,
            pass_to_pass,
            resolution,
        }
    }

    /// The grade of a run whose log could not be read (the patch did not apply, the tests
    /// never started or timed out): every test failed, as SWE-bench grades such a run.
    pub fn nothing_ran(fail_to_pass: &[String], pass_to_pass: &[String]) -> Grade {
        Grade {
            resolution: Resolution::No,
            ..Grade::of(
                fail_to_pass,
                pass_to_pass,
                &BTreeMap::new(),
                SkipRule::Uncounted,
            )
        }
    }

    pub fn resolved(&self) -> bool {
        self.resolution == Resolution::Full
    }
}
