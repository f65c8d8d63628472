//! An experiment's comparison (`[[variants]]`): per arm, the resolve rate with its 95 %
//! Wilson interval, pass@k per task, cost and tokens per resolved trajectory and steps;
//! per arm against the control (the first arm), the difference paired by task with an exact
//! sign test, and a one-line verdict.
//!
//! Pairing by task: every arm runs on every task (the campaign splits each task's samples),
//! so the comparison is of per-task resolve rates — a hard task drags both arms down alike
//! and does not count as a difference between them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The significance level of the verdict.
pub const ALPHA: f64 = 0.05;

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One (arm, task) cell as the report's query gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Cell {
    pub variant: String,
    pub instance_id: String,
    pub trajectories: u64,
    pub resolved: u64,
}

/// One arm's figures (the report's group of the arm gives its spend, tokens and steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub variant: String,
    pub tasks: u64,
    pub trajectories: u64,
    pub resolved: u64,
    pub resolve_rate: f64,
    /// The 95 % Wilson interval of the resolve rate.
    pub ci_low: f64,
    pub ci_high: f64,
    /// pass@k averaged over tasks (the unbiased estimator), for k from 1 to the fewest
    /// samples the arm has of a task.
    pub pass_at_k: Vec<PassAtK>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    pub k: u64,
    pub value: f64,
}

/// An arm against the control, paired by task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub control: String,
    pub treatment: String,
    /// Tasks both arms ran.
    pub tasks: u64,
    /// Mean over tasks of (treatment's resolve rate − control's), and its 95 % interval
    /// (normal approximation; none with fewer than two tasks).
    pub difference: f64,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Tasks where the treatment resolved more often, and where less.
    pub better: u64,
    pub worse: u64,
    /// Two-sided exact sign test over the tasks that differ.
    pub p_value: f64,
    pub significant: bool,
    pub verdict: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub arms: Vec<Arm>,
    pub comparisons: Vec<Comparison>,
}

/// The experiment of `cells`, the arms in `order` (the control first); arms without cells
/// are left out. `None` when no trajectory has an arm.
pub fn compare(cells: &[Cell], order: &[String]) -> Option<Experiment> {
    let mut by_arm: BTreeMap<&str, BTreeMap<&str, (u64, u64)>> = BTreeMap::new();
    for c in cells {
        by_arm
            .entry(&c.variant)
            .or_default()
            .insert(&c.instance_id, (c.trajectories, c.resolved));
    }
    // The configured order, then any arm the configuration no longer names.
    let mut names: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|n| by_arm.contains_key(n))
        .collect();
    let unnamed: Vec<&str> = by_arm
        .keys()
        .copied()
        .filter(|n| !names.contains(n))
        .collect();
    names.extend(unnamed);
    let arms: Vec<Arm> = names.iter().map(|n| arm(n, &by_arm[n])).collect();
    let (control, rest) = names.split_first()?;
    let comparisons = rest
        .iter()
        .map(|t| paired(control, &by_arm[control], t, &by_arm[t]))
        .collect();
    Some(Experiment { arms, comparisons })
}

fn arm(name: &str, tasks: &BTreeMap<&str, (u64, u64)>) -> Arm {
    let trajectories: u64 = tasks.values().map(|(n, _)| n).sum();
    let resolved: u64 = tasks.values().map(|(_, c)| c).sum();
    let (ci_low, ci_high) = wilson(resolved, trajectories);
    let fewest = tasks.values().map(|(n, _)| *n).min().unwrap_or(0);
    let pass_at_k = (1..=fewest)
        .map(|k| PassAtK {
            k,
            value: tasks.values().map(|(n, c)| pass_at(*n, *c, k)).sum::<f64>()
                / tasks.len() as f64,
        })
        .collect();
    Arm {
        variant: name.to_owned(),
        tasks: tasks.len() as u64,
        trajectories,
        resolved,
        resolve_rate: rate(resolved, trajectories),
        ci_low,
        ci_high,
        pass_at_k,
    }
}

fn rate(c: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { c as f64 / n as f64 }
}

/// The 95 % Wilson score interval of `c` successes in `n` trials.
pub fn wilson(c: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, c as f64 / n as f64);
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The unbiased pass@k of a task with `n` samples of which `c` resolved: the chance that
/// `k` samples drawn without replacement hold one that resolved.
pub fn pass_at(n: u64, c: u64, k: u64) -> f64 {
    if n.saturating_sub(c) < k {
        return 1.0;
    }
    // 1 − C(n−c, k) / C(n, k) = 1 − ∏_{i=n−c+1}^{n} (1 − k/i)
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// The two-sided exact sign test: `better` against `worse` under a fair coin.
pub fn sign_test(better: u64, worse: u64) -> f64 {
    let n = better + worse;
    if n == 0 {
        return 1.0;
    }
    let low = better.min(worse);
    // P(X ≤ low) for X ~ Binomial(n, ½), summed in logs.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=low {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

fn paired(
    control: &str,
    c: &BTreeMap<&str, (u64, u64)>,
    treatment: &str,
    t: &BTreeMap<&str, (u64, u64)>,
) -> Comparison {
    let differences: Vec<f64> = c
        .iter()
        .filter_map(|(task, (cn, cc))| t.get(task).map(|(tn, tc)| rate(*tc, *tn) - rate(*cc, *cn)))
        .collect();
    let n = differences.len() as f64;
    let mean = if n > 0.0 {
        differences.iter().sum::<f64>() / n
    } else {
        0.0
    };
    let half = (n > 1.0).then(|| {
        let var = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Z95 * (var / n).sqrt()
    });
    let better = differences.iter().filter(|d| **d > 0.0).count() as u64;
    let worse = differences.iter().filter(|d| **d < 0.0).count() as u64;
    let p_value = sign_test(better, worse);
    let significant = p_value < ALPHA;
    let (rt, rc) = (pooled(t), pooled(c));
    let verdict = if differences.is_empty() {
        format!("{treatment} and {control} share no task: they cannot be compared")
    } else if significant {
        // The test counts tasks: its direction is where more of them went.
        format!(
            "{treatment} resolves {} than {control} (the control) on more tasks ({} vs {}, {:+.1} points per task over {} tasks; sign test p = {p_value:.3}): significant at {:.0} %",
            if better > worse { "more" } else { "less" },
            pct(rt),
            pct(rc),
            mean * 100.0,
            differences.len(),
            ALPHA * 100.0
        )
    } else {
        format!(
            "no significant difference between {treatment} and {control} (the control): {} vs {}, {:+.1} points per task over {} tasks, sign test p = {p_value:.3}; more tasks would tell them apart",
            pct(rt),
            pct(rc),
            mean * 100.0,
            differences.len()
        )
    };
    Comparison {
        control: control.to_owned(),
        treatment: treatment.to_owned(),
        tasks: differences.len() as u64,
        difference: mean,
        // A difference of rates lies in [−1, 1].
        ci_low: half.map(|h| (mean - h).max(-1.0)),
        ci_high: half.map(|h| (mean + h).min(1.0)),
        better,
        worse,
        p_value,
        significant,
        verdict,
    }
}

impl Experiment {
    /// The arms and the verdicts, as the text report shows them.
    pub fn to_text(&self) -> String {
        let mut out = String::from("\nExperiment (paired by task; the first arm is the control)\n");
        for a in &self.arms {
            let pass: Vec<String> = a
                .pass_at_k
                .iter()
                .map(|p| format!("pass@{} {}", p.k, pct(p.value)))
                .collect();
            out += &format!(
                "  {}: {} of {} resolved = {} (95% CI {} to {}), {} tasks; {}\n",
                a.variant,
                a.resolved,
                a.trajectories,
                pct(a.resolve_rate),
                pct(a.ci_low),
                pct(a.ci_high),
                a.tasks,
                pass.join(", ")
            );
        }
        for c in &self.comparisons {
            out += &format!("  verdict: {}\n", c.verdict);
        }
        out
    }
}

fn pooled(tasks: &BTreeMap<&str, (u64, u64)>) -> f64 {
    rate(
        tasks.values().map(|(_, c)| c).sum(),
        tasks.values().map(|(n, _)| n).sum(),
    )
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn wilson_matches_the_published_interval() {
        // 8 of 10: Wilson 95 % is [0.490, 0.943].
        let (lo, hi) = wilson(8, 10);
        assert!(close(lo, 0.4902) && close(hi, 0.9433), "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, _) = wilson(0, 20);
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert!(close(pass_at(4, 1, 1), 0.25));
        assert!(close(pass_at(4, 1, 2), 0.5));
        assert!(close(pass_at(4, 0, 4), 0.0));
        assert_eq!(pass_at(4, 3, 2), 1.0);
    }

    #[test]
    fn the_sign_test_is_exact() {
        // 9 of 10 one way: p = 2 × 11 / 1024.
        assert!(close(sign_test(9, 1), 22.0 / 1024.0));
        assert_eq!(sign_test(0, 0), 1.0);
        assert_eq!(sign_test(3, 3), 1.0);
    }

    /// 12 tasks, 2 samples per arm each: the treatment resolves both samples of 10 tasks
    /// where the control resolves none, and 1 of 2 on the other 2 tasks, where the control
    /// resolves both.
    #[test]
    fn a_known_experiment_reads_as_its_known_answer() {
        let mut cells = Vec::new();
        for t in 0..12 {
            let task = format!("t{t:02}");
            let (control, treatment) = if t < 10 { (0, 2) } else { (2, 1) };
            for (variant, resolved) in [("control", control), ("edit", treatment)] {
                cells.push(Cell {
                    variant: variant.into(),
                    instance_id: task.clone(),
                    trajectories: 2,
                    resolved,
                });
            }
        }
        let e = compare(&cells, &["control".into(), "edit".into()]).expect("an experiment");
        let (c, t) = (&e.arms[0], &e.arms[1]);
        assert_eq!(
            (c.variant.as_str(), c.trajectories, c.resolved),
            ("control", 24, 4)
        );
        assert_eq!(
            (t.variant.as_str(), t.trajectories, t.resolved),
            ("edit", 24, 22)
        );
        assert!(close(t.resolve_rate, 22.0 / 24.0));
        let (lo, hi) = wilson(22, 24);
        assert_eq!((t.ci_low, t.ci_high), (lo, hi));
        assert!(close(lo, 0.7413) && close(hi, 0.9768), "{lo} {hi}");
        // pass@1 is the mean per-task rate; pass@2: 10 tasks sure, 2 sure (one of two).
        assert_eq!(t.pass_at_k.len(), 2);
        assert!(close(t.pass_at_k[0].value, (10.0 + 2.0 * 0.5) / 12.0));
        assert!(close(t.pass_at_k[1].value, 1.0));
        let cmp = &e.comparisons[0];
        assert_eq!((cmp.better, cmp.worse, cmp.tasks), (10, 2, 12));
        // Per task +1 on 10 and −0.5 on 2: mean 0.75.
        assert!(close(cmp.difference, 0.75));
        assert!(close(cmp.p_value, 2.0 * 79.0 / 4096.0), "{}", cmp.p_value);
        assert!(cmp.significant);
        assert!(
            cmp.verdict.starts_with("edit resolves more than control (the control) on more tasks (91.7% vs 16.7%, +75.0 points per task over 12 tasks; sign test p = 0.039): significant"),
            "{}",
            cmp.verdict
        );
    }

    /// Ten tasks a little better, two much worse: the sign test says better (it counts
    /// tasks), though the mean difference is negative.
    #[test]
    fn the_verdict_takes_its_direction_from_the_test() {
        let mut cells = Vec::new();
        for t in 0..12 {
            let (a, b) = if t < 10 { (4, 5) } else { (10, 0) };
            for (variant, resolved) in [("a", a), ("b", b)] {
                cells.push(Cell {
                    variant: variant.into(),
                    instance_id: format!("t{t}"),
                    trajectories: 10,
                    resolved,
                });
            }
        }
        let cmp = &compare(&cells, &[]).expect("an experiment").comparisons[0];
        assert!(cmp.significant && cmp.difference < 0.0);
        assert!(
            cmp.verdict
                .starts_with("b resolves more than a (the control) on more tasks"),
            "{}",
            cmp.verdict
        );
    }

    #[test]
    fn a_small_difference_on_few_tasks_is_not_significant() {
        let cells: Vec<Cell> = [
            ("a", "t1", 1),
            ("b", "t1", 2),
            ("a", "t2", 1),
            ("b", "t2", 1),
        ]
        .into_iter()
        .map(|(v, t, c)| Cell {
            variant: v.into(),
            instance_id: t.into(),
            trajectories: 2,
            resolved: c,
        })
        .collect();
        let e = compare(&cells, &[]).expect("an experiment");
        let cmp = &e.comparisons[0];
        assert!(!cmp.significant);
        assert_eq!(cmp.p_value, 1.0);
        assert!(
            cmp.verdict
                .starts_with("no significant difference between b and a")
        );
        assert!(compare(&[], &[]).is_none());
    }
}
