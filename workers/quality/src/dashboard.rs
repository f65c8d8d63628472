//! The HTML dashboard: one self-contained file (inline CSS and SVG charts, no script, no
//! network), so it can be mailed, archived or opened from S3.

use crate::QualityError;
use crate::report::{Group, Report};
use minijinja::{Environment, context};

const TEMPLATE: &str = include_str!("dashboard.html.j2");
/// Tasks drawn in the success-by-task chart (the table lists all).
const CHART_TASKS: usize = 50;

/// One bar of a chart.
struct Bar {
    label: String,
    value: f64,
    text: String,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How long the longest possible bar is.
#[derive(Clone, Copy)]
enum Scale {
    /// Shares: a full bar is 100%.
    Share,
    /// Amounts: the largest value fills the plot.
    Largest,
}

/// A horizontal bar chart as inline SVG; each bar is a `rect.bar` with its value in
/// `data-value`, so a browser test can read the chart back.
fn bar_chart(id: &str, title: &str, scale: Scale, bars: &[Bar]) -> String {
    const ROW: usize = 22;
    const LABEL: usize = 180;
    const WIDTH: usize = 640;
    let plot = WIDTH - LABEL - 90;
    let max = match scale {
        Scale::Share => 1.0,
        Scale::Largest => bars.iter().map(|b| b.value).fold(0.0_f64, f64::max),
    };
    let height = 30 + ROW * bars.len().max(1);
    let mut svg = format!(
        r#"<figure class="chart" id="{id}"><figcaption>{}</figcaption><svg viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="{}">"#,
        escape(title),
        escape(title)
    );
    if bars.is_empty() {
        svg += r#"<text x="8" y="20" class="empty">no data</text>"#;
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = 10 + i * ROW;
        let w = if max > 0.0 {
            (bar.value.min(max) / max * plot as f64).max(1.0)
        } else {
            1.0
        };
        let label: String = bar.label.chars().take(28).collect();
        svg += &format!(
            r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text><rect class="bar" x="{LABEL}" y="{y}" width="{w:.1}" height="{}" data-label="{}" data-value="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{}" class="value">{}</text>"#,
            LABEL - 6,
            y + 15,
            escape(&label),
            ROW - 6,
            escape(&bar.label),
            bar.value,
            escape(&bar.label),
            escape(&bar.text),
            LABEL as f64 + w + 4.0,
            y + 15,
            escape(&bar.text),
        );
    }
    svg + "</svg></figure>"
}

fn bars(
    groups: &[Group],
    value: impl Fn(&Group) -> Option<f64>,
    text: impl Fn(f64) -> String,
) -> Vec<Bar> {
    groups
        .iter()
        .filter_map(|g| {
            value(g).map(|v| Bar {
                label: g.key.clone(),
                value: v,
                text: text(v),
            })
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn usd(x: f64) -> String {
    format!("${x:.4}")
}

impl Report {
    pub fn to_html(&self) -> Result<String, QualityError> {
        let m = &self.by_model;
        let mut charts = vec![
            bar_chart(
                "success-by-model",
                "Success rate by model",
                Scale::Share,
                &bars(m, |g| Some(g.success_rate), pct),
            ),
            bar_chart(
                "cost-per-resolved-by-model",
                "Cost per resolved trajectory by model (USD)",
                Scale::Largest,
                &bars(m, |g| g.cost_per_resolved, usd),
            ),
            bar_chart(
                "tokens-by-model",
                "Tokens by model (input + output)",
                Scale::Largest,
                &bars(
                    m,
                    |g| Some((g.input_tokens + g.output_tokens) as f64),
                    |v| format!("{v:.0}"),
                ),
            ),
            bar_chart(
                "steps-by-model",
                "Mean steps by model",
                Scale::Largest,
                &bars(m, |g| Some(g.mean_steps), |v| format!("{v:.1}")),
            ),
            bar_chart(
                "success-by-scaffold",
                "Success rate by scaffold",
                Scale::Share,
                &bars(&self.by_scaffold, |g| Some(g.success_rate), pct),
            ),
            bar_chart(
                "funnel",
                "Filter funnel (trajectories surviving each stage)",
                Scale::Largest,
                &self
                    .funnel
                    .iter()
                    .map(|f| Bar {
                        label: f.stage.clone(),
                        value: f.survivors as f64,
                        text: f.survivors.to_string(),
                    })
                    .collect::<Vec<_>>(),
            ),
            bar_chart(
                "diversity-by-model",
                "Share of the most common action pattern, by model",
                Scale::Share,
                &self
                    .diversity
                    .iter()
                    .filter(|d| d.scope == "model")
                    .map(|d| Bar {
                        label: d.key.clone(),
                        value: d.top_pattern_share,
                        text: pct(d.top_pattern_share),
                    })
                    .collect::<Vec<_>>(),
            ),
            bar_chart(
                "success-by-task",
                "Success rate by task (first tasks by name)",
                Scale::Share,
                &bars(
                    &self.by_task[..self.by_task.len().min(CHART_TASKS)],
                    |g| Some(g.success_rate),
                    pct,
                ),
            ),
        ];
        if let Some(s) = &self.sampling {
            charts.push(bar_chart(
                "learning-signal",
                &format!(
                    "Learning signal ({} sampling, groups of {}): trajectories in mixed-outcome groups",
                    s.strategy, s.round_size
                ),
                Scale::Share,
                &[Bar {
                    label: format!("{} of {}", s.signal_trajectories, s.trajectories),
                    value: s.signal_share,
                    text: pct(s.signal_share),
                }],
            ));
        }
        if self.experiment.is_some() {
            charts.push(bar_chart(
                "success-by-variant",
                "Success rate by variant (experiment arm)",
                Scale::Share,
                &bars(&self.by_variant, |g| Some(g.success_rate), pct),
            ));
        }
        let mut env = Environment::new();
        let failed = |operation| move |source| QualityError::Dashboard { operation, source };
        env.add_template("dashboard.html", TEMPLATE)
            .map_err(failed("compiling the template of"))?;
        let template = env
            .get_template("dashboard.html")
            .map_err(failed("compiling the template of"))?;
        template
            .render(context! { r => self, charts => charts })
            .map_err(failed("rendering"))
    }
}
