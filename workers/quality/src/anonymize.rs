//! The optional anonymisation pass of exports: e-mail addresses, API keys and tokens, and
//! user names in home-directory paths are replaced by placeholders.
//!
//! Known secrets (the campaign's own API keys) are already redacted at record time; this
//! pass catches what the agent met inside the sandbox or the model made up.

use regex::Regex;

pub struct Anonymizer {
    rules: Vec<(Regex, &'static str)>,
}

const RULES: &[(&str, &str)] = &[
    // Provider and cloud keys by their well-known shapes.
    (
        r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|hf_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})\b",
        "<secret>",
    ),
    (r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{16,}", "${1}<token>"),
    (
        r#"(?i)\b((?:api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd)["']?\s*[=:]\s*["']?)[^\s"',;]{8,}"#,
        "${1}<secret>",
    ),
    (
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        "<email>",
    ),
    (r"/home/[A-Za-z0-9._-]+", "/home/user"),
    (r"/Users/[A-Za-z0-9._ -]+", "/Users/user"),
    (r"(?i)C:\\Users\\[A-Za-z0-9._ -]+", r"C:\Users\user"),
];

impl Anonymizer {
    pub fn new() -> Anonymizer {
        Anonymizer {
            rules: RULES
                .iter()
                .filter_map(|(pattern, replacement)| {
                    Regex::new(pattern).ok().map(|re| (re, *replacement))
                })
                .collect(),
        }
    }

    pub fn apply(&self, text: &str) -> String {
        self.rules
            .iter()
            .fold(text.to_owned(), |acc, (re, replacement)| {
                re.replace_all(&acc, *replacement).into_owned()
            })
    }
}

impl Default for Anonymizer {
    fn default() -> Self {
        Anonymizer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        assert_eq!(Anonymizer::new().rules.len(), RULES.len());
    }

    #[test]
    fn replaces_emails_keys_tokens_and_user_paths() {
        let a = Anonymizer::new();
        let cases = [
            ("mail jane.doe+x@corp.example.com now", "mail <email> now"),
            ("key sk-proj-abcdefghijklmnop1234 end", "key <secret> end"),
            ("AWS AKIAABCDEFGHIJKLMNOP", "AWS <secret>"),
            (
                "Authorization: Bearer abcdef0123456789xyz",
                "Authorization: Bearer <token>",
            ),
            (
                "export API_KEY=\"hunter2hunter2\"",
                "export API_KEY=\"<secret>\"",
            ),
            ("password: correcthorsebattery", "password: <secret>"),
            (
                "cd /home/alice/project && ls",
                "cd /home/user/project && ls",
            ),
            ("/Users/bob/src", "/Users/user/src"),
            (r"C:\Users\Carol\repo", r"C:\Users\user\repo"),
            // Left alone: ordinary code and short values.
            ("x = token_count + 1", "x = token_count + 1"),
            ("def f(a): return a@b", "def f(a): return a@b"),
        ];
        for (input, expected) in cases {
            assert_eq!(a.apply(input), expected, "input: {input}");
        }
    }
}
