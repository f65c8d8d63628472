//! The context policy for long rollouts: what the model sees of a conversation that no
//! longer fits its context window.
//!
//! As mini-swe-agent and SWE-agent do, old observations are elided — replaced by a short
//! placeholder — oldest first, until the request fits: the system prompt, the task (the
//! first user message), every assistant turn (the agent's own reasoning and actions) and
//! the last `keep_recent` observations always stay whole. Observations are elided
//! [`CHUNK`] at a time, so that what the model sees keeps the same beginning for several
//! steps (a provider's prompt cache keeps serving it) rather than changing every step. The
//! record keeps the full conversation; each step lists the messages the model saw elided.
//! A conversation that still does not fit is sent as it is, and a provider's refusal is
//! the rollout's `context_exceeded` outcome.

use synthfleet_core::trajectory::{ChatMessage, Role};

/// Observations elided at a time.
pub const CHUNK: usize = 4;

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
    let elide = |seen: &mut Vec<ChatMessage>, i: usize| {
        let chars = seen[i].content.as_deref().map_or(0, |c| c.chars().count());
        seen[i].content = Some(format!(
            "[output elided to fit the context window: {chars} characters]"
        ));
    };
    for &i in &observations[..elidable] {
        elide(&mut seen, i);
        elided.push(i);
        // Whole chunks only: the next steps keep this beginning.
        if elided.len() % CHUNK == 0 && tokens(&seen) <= budget {
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
        // A whole chunk (or all there is), even where one would do.
        assert_eq!(fit(&messages, 3_500, 1, size).elided, [3, 5]);
        // Fits: untouched.
        assert!(fit(&messages, 10_000, 1, size).elided.is_empty());
        // Cannot fit: everything elidable is elided, and it is sent as it is.
        let tight = fit(&messages, 10, 1, size);
        assert_eq!(tight.elided, [3, 5]);
    }

    #[test]
    fn observations_go_a_chunk_at_a_time_so_the_beginning_stays_for_several_steps() {
        let obs = "x".repeat(1000);
        let mut messages = vec![
            ChatMessage::text(Role::System, "s"),
            ChatMessage::text(Role::User, "task"),
        ];
        let mut seen = Vec::new();
        for _ in 0..12 {
            messages.push(ChatMessage::text(Role::Assistant, "a"));
            messages.push(observation(&obs));
            seen.push(fit(&messages, 5_000, 1, size).elided.len());
        }
        // Once trimming starts, it elides CHUNK observations at a time, and the same ones
        // for the steps after, until another chunk is needed.
        assert!(seen.iter().all(|n| n % CHUNK == 0), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(seen.iter().any(|n| *n > 0), "{seen:?}");
        let changes = seen.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            changes * 2 < seen.len(),
            "the beginning changes on few steps: {seen:?}"
        );
    }
}
