//! The context policy for long rollouts: what the model sees of a conversation that no
//! longer fits its context window.
//!
//! As mini-swe-agent and SWE-agent do, old observations are elided — replaced by a short
//! placeholder — oldest first, until the request fits: the system prompt, the task (the
//! first user message), every assistant turn (the agent's own reasoning and actions) and
//! the last `keep_recent` observations always stay whole. The record keeps the full
//! conversation; each step lists the messages the model saw elided. A conversation that
//! still does not fit is sent as it is, and a provider's refusal is the rollout's
//! `context_exceeded` outcome.

use synthfleet_core::trajectory::{ChatMessage, Role};

/// What the model sees, and which messages (by index) it sees elided.
pub struct Fitted {
    pub messages: Vec<ChatMessage>,
    pub elided: Vec<usize>,
}

/// The conversation trimmed so that `tokens(messages)` stays within `budget`.
pub fn fit(
    messages: &[ChatMessage],
    budget: u64,
    keep_recent: usize,
    tokens: impl Fn(&[ChatMessage]) -> u64,
) -> Fitted {
    let mut seen = messages.to_vec();
    let mut elided = Vec::new();
    if tokens(&seen) <= budget {
        return Fitted {
            messages: seen,
            elided,
        };
    }
    let task = messages.iter().position(|m| m.role == Role::User);
    let observations: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            Some(*i) != task
                && task.is_some_and(|t| *i > t)
                && matches!(m.role, Role::Tool | Role::User)
        })
        .map(|(i, _)| i)
        .collect();
    let elidable = observations.len().saturating_sub(keep_recent);
    for &i in &observations[..elidable] {
        let chars = seen[i].content.as_deref().map_or(0, |c| c.chars().count());
        seen[i].content = Some(format!(
            "[output elided to fit the context window: {chars} characters]"
        ));
        elided.push(i);
        if tokens(&seen) <= budget {
            break;
        }
    }
    Fitted {
        messages: seen,
        elided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(messages: &[ChatMessage]) -> u64 {
        messages
            .iter()
            .map(|m| m.content.as_deref().map_or(0, str::len) as u64)
            .sum()
    }

    fn observation(text: &str) -> ChatMessage {
        ChatMessage {
            role: Role::Tool,
            content: Some(text.into()),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: Some("c".into()),
        }
    }

    #[test]
    fn old_observations_go_first_and_the_task_and_recent_ones_stay() {
        let big = "x".repeat(1000);
        let messages = vec![
            ChatMessage::text(Role::System, "system"),
            ChatMessage::text(Role::User, &big),
            ChatMessage::text(Role::Assistant, "a1"),
            observation(&big),
            ChatMessage::text(Role::Assistant, "a2"),
            observation(&big),
            ChatMessage::text(Role::Assistant, "a3"),
            observation(&big),
        ];
        let fitted = fit(&messages, 2_500, 1, size);
        assert_eq!(fitted.elided, [3, 5], "oldest first, the last one kept");
        assert!(size(&fitted.messages) <= 2_500);
        assert_eq!(
            fitted.messages[1].content.as_deref(),
            Some(big.as_str()),
            "the task stays"
        );
        assert_eq!(fitted.messages[7].content.as_deref(), Some(big.as_str()));
        assert!(
            fitted.messages[3]
                .content
                .as_deref()
                .is_some_and(|c| c.contains("1000 characters"))
        );
        // Only as much as needed.
        assert_eq!(fit(&messages, 3_500, 1, size).elided, [3]);
        // Fits: untouched.
        assert!(fit(&messages, 10_000, 1, size).elided.is_empty());
        // Cannot fit: everything elidable is elided, and it is sent as it is.
        let tight = fit(&messages, 10, 1, size);
        assert_eq!(tight.elided, [3, 5]);
    }
}
