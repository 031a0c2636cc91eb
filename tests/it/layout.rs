//! The layering holds: dependencies point one way, transports → use cases → workflow ←
//! adapters. Read off the source, so a `use` that crosses a layer fails here, named.

use std::path::{Path, PathBuf};

/// The crate's top-level modules a file under `dir` may name with `crate::…`.
const RULES: &[(&str, &[&str])] = &[
    // The bottom of the domain: its own vocabulary, and the newtypes.
    ("workflow", &["workflow", "domain"]),
    ("domain", &["domain"]),
    // The use cases: the workflow, and the parsed config.
    ("app", &["app", "workflow", "domain", "config"]),
    // Adapters implement the workflow's ports; none reaches up into use cases or transports.
    ("store", &["store", "workflow", "domain"]),
    (
        "elasticache",
        &["elasticache", "workflow", "domain", "telemetry"],
    ),
    (
        "pagerduty.rs",
        &[
            "pagerduty",
            "workflow",
            "domain",
            "http_client",
            "telemetry",
        ],
    ),
    ("hooks.rs", &["hooks", "workflow", "domain", "telemetry"]),
    ("telemetry.rs", &["telemetry", "workflow"]),
    // CloudWatch shares the AWS SDK plumbing (config, HTTP client, error sorting).
    (
        "cloudwatch",
        &[
            "cloudwatch",
            "elasticache",
            "workflow",
            "domain",
            "telemetry",
        ],
    ),
    // The Price List client shares the same AWS SDK plumbing.
    (
        "pricing",
        &["pricing", "elasticache", "workflow", "domain", "telemetry"],
    ),
    ("chart", &["chart", "workflow", "domain"]),
    ("config.rs", &["config", "workflow", "domain"]),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        // Only Rust: a module may keep data beside it (the chart's font).
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
        return;
    }
    for entry in std::fs::read_dir(path).unwrap() {
        rust_files(&entry.unwrap().path(), out);
    }
}

/// `crate::x` paths named in code (not in comments).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((n + 1, name));
            rest = after;
        }
    }
    out
}

#[test]
fn every_layer_imports_only_what_it_may() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (dir, allowed) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(dir), &mut files);
        assert!(!files.is_empty(), "{dir} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, name) in crate_paths(&text) {
                if !allowed.contains(&name.as_str()) {
                    let file = file.strip_prefix(&src).unwrap().display().to_string();
                    broken.push(format!("src/{file}:{line} uses crate::{name}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_workflow_does_not_reach_out_through_super() {
    // `super::` in workflow/mod.rs would be the crate root.
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/workflow/mod.rs"))
            .unwrap();
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    assert!(!code.join("\n").contains("super::"));
}

#[test]
fn the_layout_section_names_every_module() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 10, "{modules:?}");
    let layout = lib.split("# Layout").nth(1).expect("a `# Layout` section");
    for m in modules {
        assert!(
            layout.contains(&format!("[`{m}`]")),
            "lib.rs's layout does not name `{m}`"
        );
    }
}
