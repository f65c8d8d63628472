//! The dependency rules of docs/ARCHITECTURE.md, checked on the resolved graph (`cargo
//! tree`): a rule that is no longer true fails here, not in a review.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files below `dir` whose names end in one of `extensions` (hidden directories and
/// `target` left out).
fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                found.push(path);
            }
        }
    }
    found
}

/// The packages `package` depends on, directly (`depth` 1) or at any depth.
fn dependencies(package: &str, direct_only: bool) -> BTreeSet<String> {
    let mut command = Command::new(env!("CARGO"));
    command.args([
        "tree",
        "--offline",
        "--locked",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "-p",
        package,
    ]);
    if direct_only {
        command.args(["--depth", "1"]);
    }
    let out = command
        .current_dir(synthfleet_tests::workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_owned)
        .collect()
}

fn assert_free_of(package: &str, deps: &BTreeSet<String>, forbidden: &[&str]) {
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| {
            forbidden
                .iter()
                .any(|f| d.as_str() == *f || (f.ends_with('-') && d.starts_with(f)))
        })
        .collect();
    assert!(
        found.is_empty(),
        "{package} must not depend on {found:?} (see docs/ARCHITECTURE.md)"
    );
}

#[test]
fn core_has_no_aws_docker_http_or_duckdb_dependency() {
    assert_free_of(
        "synthfleet-core",
        &dependencies("synthfleet-core", false),
        &[
            "aws-", "bollard", "reqwest", "hyper", "duckdb", "tokio", "redb",
        ],
    );
}

#[test]
fn what_functions_build_on_has_no_docker_duckdb_or_clap() {
    for package in ["synthfleet-backend", "synthfleet-llm", "synthfleet-tasks"] {
        assert_free_of(
            package,
            &dependencies(package, false),
            &["bollard", "duckdb", "libduckdb-sys", "clap", "anyhow"],
        );
    }
}

#[test]
fn the_agent_names_only_ports() {
    assert_free_of(
        "synthfleet-agent",
        &dependencies("synthfleet-agent", true),
        &[
            "bollard",
            "redb",
            "reqwest",
            "aws-",
            "synthfleet-sandbox",
            "synthfleet-local",
            "synthfleet-aws",
        ],
    );
}

#[test]
fn no_binary_depends_on_another_binarys_package() {
    for package in ["synthfleet-jobs", "synthfleet-cli"] {
        let deps = dependencies(package, false);
        assert_free_of(package, &deps, &["synthfleet-cli", "synthfleet-jobs"]);
    }
    assert_free_of(
        "synthfleet-cli",
        &dependencies("synthfleet-cli", false),
        &["duckdb", "libduckdb-sys", "synthfleet-quality"],
    );
}

/// The workspace's own packages, as `cargo metadata` describes them.
fn workspace_packages() -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--offline",
            "--locked",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(synthfleet_tests::workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    match metadata["packages"].take() {
        serde_json::Value::Array(packages) => packages,
        other => panic!("cargo metadata without packages: {other}"),
    }
}

fn targets(package: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    package["targets"].as_array().into_iter().flatten()
}

fn has_kind(target: &serde_json::Value, kind: &str) -> bool {
    target["kind"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| k == kind)
}

#[test]
fn anyhow_is_used_only_at_the_binaries_edge() {
    // Libraries return typed errors (thiserror); `anyhow` belongs to the binaries and to
    // `synthfleet-term`, the edge they share (flags, runtime, the one error printer).
    let packages = workspace_packages();
    let libraries: Vec<&str> = packages
        .iter()
        .filter(|p| {
            targets(p).any(|t| has_kind(t, "lib")) && !targets(p).any(|t| has_kind(t, "bin"))
        })
        .filter_map(|p| p["name"].as_str())
        .filter(|name| *name != "synthfleet-term")
        .collect();
    assert!(libraries.len() >= 10, "libraries found: {libraries:?}");
    for library in libraries {
        assert_free_of(library, &dependencies(library, true), &["anyhow"]);
    }
}

#[test]
fn a_target_built_without_a_test_harness_has_no_tests() {
    // `test = false` spares `cargo test` linking a harness with nothing in it; a test
    // written there later would never run.
    let attribute = regex::Regex::new(r"#\[(tokio::)?test\b").expect("pattern");
    let mut silent = Vec::new();
    for package in workspace_packages() {
        for target in targets(&package).filter(|t| t["test"] == false) {
            if !(has_kind(target, "lib") || has_kind(target, "bin")) {
                continue;
            }
            let src = Path::new(target["src_path"].as_str().expect("src_path"));
            for path in files_under(src.parent().expect("a source directory"), &["rs"]) {
                if std::fs::read_to_string(&path).is_ok_and(|t| attribute.is_match(&t)) {
                    silent.push(format!("{} ({})", path.display(), package["name"]));
                }
            }
        }
    }
    assert!(
        silent.is_empty(),
        "tests in a `test = false` target never run; set `test = true` in its Cargo.toml: {silent:?}"
    );
}

/// What docs/ARCHITECTURE.md names in backticks: repository paths, Rust items (`Type`,
/// `module::item`, `Type::method`, `a::{b, c}`) and identifiers (test names, config keys).
mod named_in_the_architecture {
    use super::files_under;
    use regex::Regex;
    use std::path::{Path, PathBuf};
    use std::sync::LazyLock;

    static IDENT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("pattern"));
    static RUST_PATH: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[A-Za-z_]\w*(::[A-Za-z_]\w*)*(::\{[\w, ]+\})?$").expect("pattern")
    });

    /// Every file of the workspace's code and configuration (no prose), with its path
    /// relative to the root.
    fn sources(root: &Path) -> Vec<(PathBuf, String)> {
        [
            "workers",
            "functions",
            "tests",
            "infra",
            "examples",
            "localstack",
            ".ci",
        ]
        .iter()
        .flat_map(|top| files_under(&root.join(top), &["rs", "toml", "tf", "sh", "py", "tftpl"]))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path.strip_prefix(root).unwrap_or(&path).to_path_buf(), text))
        })
        .collect()
    }

    /// The `{ … }` block that starts at the first `{` at or after `from`.
    fn block(text: &str, from: usize) -> &str {
        let Some(open) = text[from..].find('{').map(|i| from + i) else {
            return "";
        };
        let mut depth = 0usize;
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &text[open..open + i + 1];
                    }
                }
                _ => {}
            }
        }
        &text[open..]
    }

    struct Code {
        root: PathBuf,
        files: Vec<(PathBuf, String)>,
    }

    impl Code {
        fn rust(&self) -> impl Iterator<Item = &(PathBuf, String)> {
            self.files
                .iter()
                .filter(|(p, _)| p.extension().is_some_and(|e| e == "rs"))
        }

        /// A pattern that finds the definition of item `name`.
        fn definition(name: &str) -> Regex {
            Regex::new(&format!(
                r"\b(fn|struct|enum|trait|type|const|static|mod|macro_rules!)\s+{}\b",
                regex::escape(name)
            ))
            .expect("pattern")
        }

        /// The module path of a Rust file, crate directory first and without `src` or the
        /// crate root's file: `workers/core/src/campaign/validate.rs` → `core campaign
        /// validate`, `tests/e2e/control.rs` → `tests e2e control`.
        fn module_path(path: &Path) -> Vec<String> {
            let mut parts: Vec<String> = path
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|c| c != "src" && c != "workers" && c != "functions")
                .collect();
            if parts
                .last()
                .is_some_and(|l| ["mod", "lib", "main"].contains(&l.as_str()))
            {
                parts.pop();
            }
            parts
        }

        /// Files of module `module`: its own file, its submodules' files, and files with an
        /// inline `mod module`.
        fn in_module<'a>(&'a self, module: &'a str) -> impl Iterator<Item = &'a String> + 'a {
            let module = module.strip_prefix("synthfleet_").unwrap_or(module);
            self.rust()
                .filter(move |(path, text)| {
                    Self::module_path(path).iter().any(|p| p == module)
                        || text.contains(&format!("mod {module} "))
                })
                .map(|(_, text)| text)
        }

        /// `child` is a module directly inside module `parent` (a file, or an inline `mod`).
        fn has_submodule(&self, parent: &str, child: &str) -> bool {
            let parent = parent.strip_prefix("synthfleet_").unwrap_or(parent);
            let inline =
                Regex::new(&format!(r"\bmod\s+{}\b", regex::escape(child))).expect("pattern");
            self.rust().any(|(path, _)| {
                Self::module_path(path)
                    .windows(2)
                    .any(|w| w[0] == parent && w[1] == child)
            }) || self.in_module(parent).any(|text| inline.is_match(text))
        }

        /// `Type::member`: a method in an `impl`/`trait` block of `Type`, a field of
        /// `struct Type`, or a variant of `enum Type`.
        fn has_member(&self, ty: &str, member: &str) -> bool {
            let owner = Regex::new(&format!(
                r"(impl\b[^;{{]*\b{ty}\b[^;{{]*\{{|trait\s+{ty}\b[^;{{]*\{{|(enum|struct)\s+{ty}\b[^;{{]*\{{)",
                ty = regex::escape(ty)
            ))
            .expect("pattern");
            let field = Regex::new(&format!(r"\b{}\s*:", regex::escape(member))).expect("pattern");
            let variant = Regex::new(&format!(r"\b{}\b", regex::escape(member))).expect("pattern");
            let definition = Self::definition(member);
            self.rust().any(|(_, text)| {
                owner.find_iter(text).any(|m| {
                    let body = block(text, m.start());
                    definition.is_match(body)
                        || (m.as_str().starts_with("struct") && field.is_match(body))
                        || (m.as_str().starts_with("enum") && variant.is_match(body))
                })
            })
        }

        /// `name` is a type or a variant defined here, or one the code uses from a dependency.
        fn has_type(&self, name: &str) -> bool {
            let definition = Self::definition(name);
            let name = regex::escape(name);
            let imported = Regex::new(&format!(
                r"(?m)^\s*(pub(\([a-z]+\))?\s+)?use\s[^;]*\b{name}\b"
            ))
            .expect("pattern");
            // An enum variant: the name first on its line, then `,`, `(` or `{`.
            let variant = Regex::new(&format!(r"(?m)^\s*{name}\s*[,({{]")).expect("pattern");
            self.rust().any(|(_, text)| {
                definition.is_match(text) || imported.is_match(text) || variant.is_match(text)
            })
        }

        /// `word` stands in code or configuration (not in a comment).
        fn mentions(&self, word: &str) -> bool {
            let pattern = Regex::new(&format!(r"\b{}\b", regex::escape(word))).expect("pattern");
            self.files.iter().any(|(_, text)| {
                text.lines().any(|line| {
                    let line = line.trim_start();
                    !line.starts_with("//") && !line.starts_with('#') && pattern.is_match(line)
                })
            })
        }

        /// Why `token` names nothing that exists (`None`: it does, or it is no name).
        fn missing(&self, token: &str) -> Option<String> {
            let camel = |s: &str| {
                s.starts_with(|c: char| c.is_ascii_uppercase())
                    && s.chars().any(|c| c.is_ascii_lowercase())
            };
            let repo_path = [
                "workers/",
                "tests/",
                "functions/",
                "infra/",
                "examples/",
                "docs/",
                "localstack/",
                ".ci/",
            ];
            if repo_path.iter().any(|p| token.starts_with(p)) {
                if token.contains(['<', '{', ' ', '|']) {
                    return None;
                }
                return (!self.path_exists(token)).then(|| format!("no path {token}"));
            }
            if token.contains("::") && RUST_PATH.is_match(token) {
                let (head, tail) = match token.split_once("::{") {
                    Some((head, list)) => (
                        head.to_owned(),
                        list.trim_end_matches('}')
                            .split(',')
                            .map(|s| s.trim().to_owned())
                            .collect(),
                    ),
                    None => {
                        let (head, last) = token.rsplit_once("::").expect("has ::");
                        (head.to_owned(), vec![last.to_owned()])
                    }
                };
                let parent = head.rsplit("::").next().unwrap_or(&head).to_owned();
                for name in tail {
                    let definition = Self::definition(&name);
                    let found = if camel(&parent) {
                        self.has_member(&parent, &name)
                    } else {
                        self.in_module(&parent)
                            .any(|text| definition.is_match(text))
                            || self.has_submodule(&parent, &name)
                    };
                    if !found {
                        return Some(format!("no item `{name}` in `{parent}` (from `{token}`)"));
                    }
                }
                return None;
            }
            if !IDENT.is_match(token) {
                return None;
            }
            if camel(token) && !token.contains('_') {
                return (!self.has_type(token)).then(|| format!("no type `{token}`"));
            }
            if token.contains('_') {
                return (!self.mentions(token)).then(|| format!("nothing is called `{token}`"));
            }
            None
        }

        fn path_exists(&self, path: &str) -> bool {
            let mut candidates = vec![self.root.clone()];
            for part in path.trim_end_matches('/').split('/') {
                candidates = candidates
                    .into_iter()
                    .flat_map(|dir| {
                        if part == "*" {
                            std::fs::read_dir(&dir)
                                .into_iter()
                                .flatten()
                                .flatten()
                                .map(|e| e.path())
                                .collect::<Vec<_>>()
                        } else {
                            vec![dir.join(part)]
                        }
                    })
                    .filter(|p| p.exists())
                    .collect();
            }
            !candidates.is_empty()
        }
    }

    #[test]
    fn every_path_and_item_the_architecture_names_exists() {
        let root = synthfleet_tests::workspace_root();
        let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
            .expect("reading docs/ARCHITECTURE.md");
        let code = Code {
            files: sources(&root),
            root,
        };
        let tick = Regex::new(r"`([^`\n]+)`").expect("pattern");
        let mut missing: Vec<String> = tick
            .captures_iter(&doc)
            .filter_map(|c| code.missing(c[1].trim()))
            .collect();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "docs/ARCHITECTURE.md names what the code does not have:\n  {}",
            missing.join("\n  ")
        );
    }
}
