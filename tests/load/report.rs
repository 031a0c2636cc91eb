//! Figures and targets: each scenario collects them, prints one table at the end (also
//! written to `target/tmp/load-<scenario>.txt`), then fails if a target it enforces was
//! missed — after printing everything, so a miss still shows every figure.

use std::fmt::Write as _;

/// The figures of one scenario run.
pub struct Report {
    title: String,
    /// Targets are enforced (the full run) or only shown (the small run in CI, whose machine
    /// is too noisy for timing targets).
    enforce: bool,
    rows: Vec<Row>,
}

struct Row {
    name: String,
    value: String,
    /// The target, and whether it was met.
    target: Option<(String, bool)>,
}

impl Report {
    pub fn new(title: impl Into<String>, enforce: bool) -> Report {
        Report {
            title: title.into(),
            enforce,
            rows: Vec::new(),
        }
    }

    /// A figure with no target.
    pub fn figure(&mut self, name: &str, value: impl std::fmt::Display) {
        self.rows.push(Row {
            name: name.into(),
            value: value.to_string(),
            target: None,
        });
    }

    /// A figure and its target (`met` says whether it was met).
    pub fn target(&mut self, name: &str, value: impl std::fmt::Display, target: &str, met: bool) {
        self.rows.push(Row {
            name: name.into(),
            value: value.to_string(),
            target: Some((target.into(), met)),
        });
    }

    /// Print the table; fail if an enforced target was missed.
    pub fn finish(self) {
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
        // Long values (a notice's text) run past the column rather than widen it.
        let vwidth = self
            .rows
            .iter()
            .map(|r| r.value.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        let mut out = format!("\n== {}\n", self.title);
        let mut missed = Vec::new();
        for r in &self.rows {
            let _ = write!(out, "  {:width$}  {:vwidth$}", r.name, r.value);
            if let Some((target, met)) = &r.target {
                let _ = write!(
                    out,
                    "  target {target}: {}",
                    if *met { "met" } else { "MISSED" }
                );
                if !met {
                    missed.push(format!("{} = {} (target {target})", r.name, r.value));
                }
            }
            out.push('\n');
        }
        println!("{out}");
        let file = format!(
            "{}/load-{}.txt",
            env!("CARGO_TARGET_TMPDIR"),
            self.title
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("report")
        );
        let _ = std::fs::write(file, &out);
        if self.enforce {
            assert!(
                missed.is_empty(),
                "targets missed:\n  {}",
                missed.join("\n  ")
            );
        }
    }
}

/// The `p`-th percentile (0–100) of `samples`, sorted in place.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}
