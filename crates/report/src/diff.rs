//! `netblame diff`: two runs compared test by test (`netblame_correlate::suite::diff`), as text,
//! as a Markdown table for a CI job summary, or as JSON.

use std::io::{self, Write};

use netblame_correlate::suite::{Change, Measure, RunDiff, Side};
use serde_json::{json, Value};

use crate::fmt::duration;

/// The two runs, as the output names them.
#[derive(Debug, Clone, Copy)]
pub struct Runs<'a> {
    pub a: &'a str,
    pub b: &'a str,
}

/// `+200.0 ms`, `-3.1 ms`.
fn signed(ns: i64) -> String {
    if ns >= 0 {
        format!("+{}", duration(ns))
    } else {
        format!("-{}", duration(-ns))
    }
}

fn name(test: &str, phase: Option<&str>) -> String {
    match phase {
        Some(p) => format!("{test} ({p})"),
        None => test.to_string(),
    }
}

fn outcome(s: &Side) -> &'static str {
    s.outcome.map_or("-", |o| o.as_str())
}

/// What the runs were compared on, and why.
fn basis(d: &RunDiff) -> String {
    let changes = format!("changes over {}", duration(d.min_change_ns));
    match (d.measure, d.without_records) {
        (Measure::Wall, _) => {
            format!("compared on each test phase's own time (pytest's); {changes}")
        }
        (Measure::Socket, (a, b)) => {
            let which = match (a, b) {
                (true, true) => "neither run has",
                (true, false) => "run A has no",
                _ => "run B has no",
            };
            format!(
                "compared on time in socket calls only: {which} test phase records (made before \
                 netblame's pytest plugin, with it off, or not a pytest run); {changes}"
            )
        }
    }
}

fn causes(c: &Change) -> String {
    let parts: Vec<String> = c
        .causes
        .iter()
        .map(|&(cause, ns)| format!("{} {}", cause.as_str(), signed(ns)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The text form.
pub fn write_text(out: &mut impl Write, runs: Runs, d: &RunDiff) -> io::Result<()> {
    writeln!(out, "netblame diff: A {} -> B {}", runs.a, runs.b)?;
    writeln!(out, "  {}", basis(d))?;
    for (what, list) in [("slower", &d.slower), ("faster", &d.faster)] {
        if list.is_empty() {
            continue;
        }
        writeln!(out, "\n{what} ({}):", list.len())?;
        for c in list {
            writeln!(
                out,
                "  {:>10}  {}  {} -> {}: {}",
                signed(c.delta_ns()),
                name(&c.test, c.phase.as_deref()),
                duration(c.a.ns),
                duration(c.b.ns),
                causes(c)
            )?;
        }
    }
    if !d.outcome_changed.is_empty() {
        writeln!(out, "\noutcome changed ({}):", d.outcome_changed.len())?;
        for c in &d.outcome_changed {
            writeln!(
                out,
                "  {}: {} -> {}",
                name(&c.test, c.phase.as_deref()),
                outcome(&c.a),
                outcome(&c.b)
            )?;
        }
    }
    for (what, list) in [("added", &d.added), ("removed", &d.removed)] {
        if list.is_empty() {
            continue;
        }
        writeln!(out, "\n{what} ({}):", list.len())?;
        for (test, phase, side) in list {
            writeln!(
                out,
                "  {} {}, {}",
                name(test, phase.as_deref()),
                duration(side.ns),
                outcome(side)
            )?;
        }
    }
    writeln!(
        out,
        "\n{} test phases in both runs: {} slower, {} faster, {} with another outcome; {} added, {} removed",
        d.matched,
        d.slower.len(),
        d.faster.len(),
        d.outcome_changed.len(),
        d.added.len(),
        d.removed.len()
    )
}

/// A Markdown table cell: pipes escaped, code for node ids.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown form (GitHub-flavoured; fits `$GITHUB_STEP_SUMMARY`).
pub fn write_markdown(out: &mut impl Write, runs: Runs, d: &RunDiff) -> io::Result<()> {
    writeln!(out, "### netblame diff\n")?;
    writeln!(
        out,
        "`{}` &rarr; `{}`: {}.\n",
        cell(runs.a),
        cell(runs.b),
        basis(d)
    )?;
    let changed: Vec<&Change> = d.slower.iter().chain(&d.faster).collect();
    if changed.is_empty() {
        writeln!(
            out,
            "No test changed by more than {}.\n",
            duration(d.min_change_ns)
        )?;
    } else {
        writeln!(out, "| test | phase | before | after | change | where |")?;
        writeln!(out, "|---|---|---:|---:|---:|---|")?;
        for c in changed {
            writeln!(
                out,
                "| `{}` | {} | {} | {} | **{}** | {} |",
                cell(&c.test),
                c.phase.as_deref().unwrap_or(""),
                duration(c.a.ns),
                duration(c.b.ns),
                signed(c.delta_ns()),
                cell(&causes(c))
            )?;
        }
        writeln!(out)?;
    }
    if !d.outcome_changed.is_empty() {
        writeln!(out, "| outcome changed | phase | before | after |")?;
        writeln!(out, "|---|---|---|---|")?;
        for c in &d.outcome_changed {
            writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                cell(&c.test),
                c.phase.as_deref().unwrap_or(""),
                outcome(&c.a),
                outcome(&c.b)
            )?;
        }
        writeln!(out)?;
    }
    for (what, list) in [("Added", &d.added), ("Removed", &d.removed)] {
        if list.is_empty() {
            continue;
        }
        let names: Vec<String> = list
            .iter()
            .map(|(t, p, _)| format!("`{}`", cell(&name(t, p.as_deref()))))
            .collect();
        writeln!(out, "**{what}** ({}): {}\n", list.len(), names.join(", "))?;
    }
    writeln!(
        out,
        "{} test phases in both runs: {} slower, {} faster.",
        d.matched,
        d.slower.len(),
        d.faster.len()
    )
}

fn side_json(s: &Side) -> Value {
    json!({"ns": s.ns, "outcome": s.outcome.map(|o| o.as_str())})
}

fn change_json(c: &Change) -> Value {
    let causes: serde_json::Map<String, Value> = c
        .causes
        .iter()
        .map(|&(cause, ns)| (format!("{}_ns", cause.key()), json!(ns)))
        .collect();
    json!({
        "test": c.test,
        "phase": c.phase,
        "a": side_json(&c.a),
        "b": side_json(&c.b),
        "delta_ns": c.delta_ns(),
        "causes": causes,
    })
}

/// The JSON form: one object.
pub fn to_json(runs: Runs, d: &RunDiff) -> Value {
    let listed = |l: &[(String, Option<String>, Side)]| -> Vec<Value> {
        l.iter()
            .map(|(t, p, s)| json!({"test": t, "phase": p, "ns": s.ns, "outcome": s.outcome.map(|o| o.as_str())}))
            .collect()
    };
    json!({
        "run_a": runs.a,
        "run_b": runs.b,
        "measure": d.measure.as_str(),
        "runs_without_records": {"a": d.without_records.0, "b": d.without_records.1},
        "min_change_ns": d.min_change_ns,
        "matched": d.matched,
        "slower": d.slower.iter().map(change_json).collect::<Vec<_>>(),
        "faster": d.faster.iter().map(change_json).collect::<Vec<_>>(),
        "outcome_changed": d.outcome_changed.iter().map(change_json).collect::<Vec<_>>(),
        "added": listed(&d.added),
        "removed": listed(&d.removed),
    })
}
