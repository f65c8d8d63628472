//! A readable view of one trajectory (`synthfleet show`, `synthfleet-jobs review`).

use synthfleet_core::trajectory::{Role, TrajectoryRecord};

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

pub fn render(r: &TrajectoryRecord, with_messages: bool) -> String {
    let mut out = String::new();
    let status = r
        .exit_status
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "running".into());
    out.push_str(&format!(
        "trajectory {}\n  campaign {}  instance {}  sample {}  attempt {}\n",
        r.trajectory_id, r.campaign, r.instance_id, r.sample_index, r.attempt
    ));
    out.push_str(&format!(
        "  model {} ({})  scaffold {} {} ({}, templates {})\n",
        r.model,
        r.provider,
        r.scaffold.name,
        r.scaffold.version,
        serde_json::to_value(r.scaffold.protocol)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        &r.scaffold.template_hash[..12.min(r.scaffold.template_hash.len())]
    ));
    let verdict = match &r.verification {
        Some(v) => format!(
            "{}{} (eval exit {}, patch {}, reward {})",
            if v.resolved {
                "RESOLVED"
            } else {
                "not resolved"
            },
            v.harness
                .map(|h| format!(" by {h}'s harness"))
                .unwrap_or_default(),
            v.eval_exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into()),
            if v.patch_applied {
                "applied"
            } else {
                "did not apply"
            },
            v.reward
        ),
        None => "not verified".into(),
    };
    out.push_str(&format!(
        "  exit {status}  {verdict}  [{}]\n",
        r.status().as_str()
    ));
    if let Some(e) = &r.error {
        out.push_str(&format!("  error {e}\n"));
    }
    out.push_str(&format!(
        "  {} steps  tokens {} in / {} out  cost ${:.6}  llm calls {} (+{} retries)\n",
        r.totals.n_steps,
        r.totals.input_tokens,
        r.totals.output_tokens,
        r.totals.cost_usd,
        r.totals.llm_calls,
        r.totals.llm_retries
    ));
    out.push_str(&format!(
        "  {:.1}s total (llm {:.1}s, sandbox {:.1}s, verification {:.1}s)  started {}\n",
        r.timings.duration_ms as f64 / 1e3,
        r.timings.llm_ms as f64 / 1e3,
        r.timings.sandbox_ms as f64 / 1e3,
        r.timings.verification_ms as f64 / 1e3,
        r.timings.started_at.to_rfc3339()
    ));
    out.push_str(&format!(
        "  image {} ({})  worker {}\n",
        r.image,
        r.image_digest.as_deref().unwrap_or("no digest"),
        r.worker_id
    ));
    if let Some(env) = &r.environment {
        out.push_str(&format!(
            "  started from {} in {}  harness {}\n",
            env.start_commit.as_deref().unwrap_or("no git repository"),
            env.workdir,
            env.harness_hash.get(..12).unwrap_or(&env.harness_hash)
        ));
    }
    for step in &r.steps {
        let outcome = if step.format_error {
            "format error".to_owned()
        } else if step.timed_out {
            "timed out".to_owned()
        } else {
            match step.exit_code {
                Some(code) => format!("exit {code}"),
                None => "submit".into(),
            }
        };
        out.push_str(&format!(
            "\n── step {} ── {outcome}, {} ms in sandbox, {} ms llm{}, {}+{} tokens\n",
            step.index + 1,
            step.duration_ms,
            step.llm_duration_ms,
            if step.llm_retries > 0 {
                format!(" ({} retries)", step.llm_retries)
            } else {
                String::new()
            },
            step.input_tokens,
            step.output_tokens
        ));
        if let Some(action) = &step.action {
            out.push_str(&format!("  $ {}\n", action.replace('\n', "\n    ")));
        }
        out.push_str(&indent(&step.observation));
    }
    out.push_str("\n── patch ──\n");
    out.push_str(if r.patch.is_empty() {
        "    (empty)\n"
    } else {
        ""
    });
    out.push_str(&indent(&r.patch));
    if let Some(v) = &r.verification {
        for (list, split) in [
            ("FAIL_TO_PASS", &v.fail_to_pass),
            ("PASS_TO_PASS", &v.pass_to_pass),
        ] {
            if let Some(split) = split {
                out.push_str(&format!(
                    "\n{list}: {} passed, {} failed{}\n",
                    split.passed.len(),
                    split.failed.len(),
                    if split.failed.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", split.failed.join(", "))
                    }
                ));
            }
        }
        out.push_str("\n── verification output ──\n");
        out.push_str(&indent(&v.output));
    }
    if with_messages {
        out.push_str("\n── messages ──\n");
        for m in &r.messages {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            out.push_str(&format!("[{role}]\n"));
            if let Some(reasoning) = &m.reasoning_content {
                out.push_str(&format!("  (reasoning)\n{}", indent(reasoning)));
            }
            out.push_str(&indent(m.content.as_deref().unwrap_or("")));
            for call in &m.tool_calls {
                out.push_str(&format!(
                    "    -> {}({})\n",
                    call.function.name, call.function.arguments
                ));
            }
        }
    }
    out
}
