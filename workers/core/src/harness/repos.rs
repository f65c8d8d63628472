//! The test command, log parser and eval-time steps of each repository SWE-bench's harness
//! knows (`MAP_REPO_VERSION_TO_SPECS`, `MAP_REPO_TO_PARSER` in SWE-bench's
//! `harness/constants/python.py` and `harness/log_parsers/python.py`), for rows that do not
//! carry their own (SWE-rebench's `install_config` does).
//!
//! Only what runs at evaluation time is kept: the environment activation, `eval_commands`,
//! the re-run `install`, the test command and the parser. Image-build steps (`pre_install`,
//! packages) belong to the task image.

use super::LogParser;

/// SWE-bench's images hold the repository's environment in the conda env `testbed`.
pub const CONDA_ACTIVATE: [&str; 2] = [
    "source /opt/miniconda3/bin/activate",
    "conda activate testbed",
];

/// What the eval script of a repository's instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    pub test_cmd: String,
    pub log_parser: LogParser,
    /// `eval_commands`: run right after the environment is activated.
    pub eval_commands: Vec<String>,
    /// `install`: re-run before the tests so the candidate patch is what gets imported.
    pub install: Option<String>,
}

const TEST_PYTEST: &str = "pytest -rA";
const TEST_ASTROPY_PYTEST: &str = "pytest -rA -vv -o console_output_style=classic --tb=no";
const TEST_DJANGO: &str = "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1";
const TEST_DJANGO_NO_PARALLEL: &str = "./tests/runtests.py --verbosity 2";
const TEST_SEABORN: &str = "pytest --no-header -rA";
const TEST_SPHINX: &str = "tox --current-env -epy39 -v --";
const TEST_SYMPY: &str =
    "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose";
const PIP_EDITABLE: &str = "python -m pip install -e .";

/// The repositories of SWE-bench (test, dev and Verified splits), in the table's order.
pub const KNOWN: [&str; 18] = [
    "astropy/astropy",
    "django/django",
    "marshmallow-code/marshmallow",
    "matplotlib/matplotlib",
    "mwaskom/seaborn",
    "pallets/flask",
    "psf/requests",
    "pvlib/pvlib-python",
    "pydata/xarray",
    "pydicom/pydicom",
    "pylint-dev/astroid",
    "pylint-dev/pylint",
    "pytest-dev/pytest",
    "pyvista/pyvista",
    "scikit-learn/scikit-learn",
    "sphinx-doc/sphinx",
    "sqlfluff/sqlfluff",
    "sympy/sympy",
];

/// `major.minor` of a SWE-bench `version` string, for range checks.
fn version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The spec of `repo` at `version` (SWE-bench's `version` field), or `None` for a
/// repository SWE-bench does not know.
pub fn spec(repo: &str, version_str: Option<&str>) -> Option<RepoSpec> {
    let v = version_str.and_then(version);
    let spec = |test_cmd: &str, log_parser: LogParser, install: &str| RepoSpec {
        test_cmd: test_cmd.to_owned(),
        log_parser,
        eval_commands: Vec::new(),
        install: Some(install.to_owned()),
    };
    Some(match repo {
        "astropy/astropy" => {
            let cmd = if v.is_some_and(|v| v < (3, 0)) {
                TEST_ASTROPY_PYTEST
            } else {
                TEST_PYTEST
            };
            spec(
                cmd,
                LogParser::PytestV2,
                "python -m pip install -e .[test] --verbose",
            )
        }
        "django/django" => {
            let cmd = if v == Some((1, 9)) {
                TEST_DJANGO_NO_PARALLEL
            } else {
                TEST_DJANGO
            };
            let old = v.is_some_and(|v| v < (3, 0));
            let mut s = spec(
                cmd,
                LogParser::Django,
                if old {
                    "python setup.py install"
                } else {
                    PIP_EDITABLE
                },
            );
            s.eval_commands = if old {
                [
                    "export LANG=en_US.UTF-8",
                    "export LC_ALL=en_US.UTF-8",
                    "export PYTHONIOENCODING=utf8",
                    "export LANGUAGE=en_US:en",
                ]
                .map(str::to_owned)
                .to_vec()
            } else if v.is_some_and(|v| v < (4, 0)) {
                [
                    "sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen",
                    "export LANG=en_US.UTF-8",
                    "export LANGUAGE=en_US:en",
                    "export LC_ALL=en_US.UTF-8",
                ]
                .map(str::to_owned)
                .to_vec()
            } else {
                Vec::new()
            };
            s
        }
        "matplotlib/matplotlib" => spec(
            TEST_PYTEST,
            LogParser::Matplotlib,
            if v.is_some_and(|v| v >= (3, 8)) {
                "python -m pip install --no-build-isolation -e \".[dev]\""
            } else {
                PIP_EDITABLE
            },
        ),
        "mwaskom/seaborn" => spec(
            TEST_SEABORN,
            LogParser::Seaborn,
            if v.is_some_and(|v| v >= (0, 12)) {
                "python -m pip install -e .[dev]"
            } else {
                PIP_EDITABLE
            },
        ),
        "psf/requests" => spec(
            TEST_PYTEST,
            LogParser::PytestOptions,
            "python -m pip install .",
        ),
        "pydicom/pydicom" | "pylint-dev/pylint" => {
            spec(TEST_PYTEST, LogParser::PytestOptions, PIP_EDITABLE)
        }
        "scikit-learn/scikit-learn" => spec(
            TEST_PYTEST,
            LogParser::PytestV2,
            "python -m pip install -v --no-use-pep517 --no-build-isolation -e .",
        ),
        "sphinx-doc/sphinx" => spec(
            TEST_SPHINX,
            LogParser::PytestV2,
            "python -m pip install -e .[test]",
        ),
        "sympy/sympy" => spec(TEST_SYMPY, LogParser::Sympy, PIP_EDITABLE),
        "marshmallow-code/marshmallow"
        | "pallets/flask"
        | "pvlib/pvlib-python"
        | "pydata/xarray"
        | "pylint-dev/astroid"
        | "pytest-dev/pytest"
        | "pyvista/pyvista"
        | "sqlfluff/sqlfluff" => spec(TEST_PYTEST, LogParser::Pytest, PIP_EDITABLE),
        _ => return None,
    })
}

/// SWE-bench's `NON_TEST_EXTS` (its `"csv"` has no dot, and so matches `foo_csv` too).
const NON_TEST_EXTS: [&str; 11] = [
    ".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml",
];

/// SWE-bench's `get_test_directives`: the files the test patch touches, minus data files;
/// for django, dotted module names relative to `tests/`.
pub fn test_directives(repo: &str, test_patch: &str) -> Vec<String> {
    let files = super::touched_files(test_patch)
        .into_iter()
        .filter(|f| !NON_TEST_EXTS.iter().any(|ext| f.ends_with(ext)));
    if repo != "django/django" {
        return files.collect();
    }
    files
        .filter(|f| is_django_test_file(f))
        .map(|f| {
            let f = f.strip_suffix(".py").unwrap_or(&f);
            let f = f.strip_prefix("tests/").unwrap_or(f);
            f.replace('/', ".")
        })
        .collect()
}

fn is_django_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "tests.py"
        || name.starts_with("test_")
        || path.contains("/tests/")
        || path.contains("/test_")
}
