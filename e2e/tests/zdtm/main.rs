//! CRIU's own zdtm static tests (built from the source of the installed CRIU version), each
//! checkpointed and restored twice in the same run: by raw CRIU on the host (the baseline) and
//! inside an rctr instance (checkpoint --stop, restart). Every test raw CRIU passes must pass
//! in rctr; tests the container design excludes are listed with the reason
//! (`catalogue.rs`). The table of results is printed and written to
//! `<target>/zdtm/results.md`, from which docs/checkpoint.md is refreshed.
//!
//! `make zdtm` runs only this file; `make test` runs it with the other end-to-end tests.

mod build;
mod catalogue;
mod in_rctr;
mod protocol;
mod raw;

use catalogue::{InRctr, CASES};
use rctr_e2e::{require_root_and_criu, workspace_root, TestEnv};
use std::fmt::Write as _;
use std::io::Write as _;

/// One side's outcome.
enum Outcome {
    Pass,
    Fail(String),
    NotRun(&'static str),
}

impl Outcome {
    fn cell(&self) -> String {
        match self {
            Outcome::Pass => "PASS".into(),
            Outcome::Fail(_) => "FAIL".into(),
            Outcome::NotRun(why) => format!("not run ({why})"),
        }
    }
}

fn from(result: Result<(), String>) -> Outcome {
    match result {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

/// Prints a progress line straight to the terminal (the harness captures passing tests).
fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn zdtm_static_tests_pass_in_rctr_where_raw_criu_passes() {
    let test = "zdtm_static_tests_pass_in_rctr_where_raw_criu_passes";
    if !require_root_and_criu(test) {
        return;
    }
    let tarball = match build::source_tarball() {
        Ok(t) => t,
        Err(why) => {
            progress(&format!("SKIPPED {test}: {why}"));
            return;
        }
    };
    let only: Option<Vec<String>> = std::env::var("ZDTM_ONLY")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_string).collect());
    let cases: Vec<_> = CASES
        .iter()
        .filter(|c| match &only {
            Some(names) => names.iter().any(|n| n == c.name),
            None => true,
        })
        .collect();
    let runnable: Vec<&str> = cases
        .iter()
        .filter(|c| c.no_raw.is_none() || !matches!(c.in_rctr, InRctr::DesignChoice(_)))
        .map(|c| c.name)
        .collect();
    let bins = build::build(&tarball, &runnable).unwrap_or_else(|e| panic!("{e:#}"));
    let env = TestEnv::new(test);
    let image = build::image(&bins, &runnable, env.work()).unwrap_or_else(|e| panic!("{e:#}"));
    let root = env.work().join("runs");

    let mut rows = vec![];
    for (index, case) in cases.iter().enumerate() {
        let built = bins.join(case.name).is_file();
        let raw = if let Some(why) = case.no_raw {
            Outcome::NotRun(why)
        } else if !built {
            Outcome::Fail("did not build".into())
        } else {
            from(raw::run(case, &bins, &raw::work_dir(&root, case, "raw")))
        };
        let in_rctr = match case.in_rctr {
            InRctr::DesignChoice(_) => Outcome::NotRun("design choice"),
            _ if !built => Outcome::Fail("did not build".into()),
            InRctr::Run | InRctr::KnownGap(_) => from(in_rctr::run(
                &env,
                &image,
                index,
                case,
                &raw::work_dir(&root, case, "rctr"),
            )),
        };
        progress(&format!(
            "zdtm {:<22} raw: {:<5} rctr: {}",
            case.name,
            raw.cell(),
            in_rctr.cell()
        ));
        rows.push((case, raw, in_rctr));
    }

    // The table, and the verdict.
    let mut table =
        String::from("| Area | Test | raw CRIU | rctr | Note |\n|---|---|---|---|---|\n");
    let mut regressions = vec![];
    let (mut raw_passed, mut both_passed) = (0, 0);
    for (case, raw, in_rctr) in &rows {
        let mut notes = vec![];
        if let Outcome::Fail(e) = raw {
            notes.push(format!("raw: {e}"));
        }
        if let Outcome::Fail(e) = in_rctr {
            notes.push(format!("rctr: {e}"));
        }
        match case.in_rctr {
            InRctr::DesignChoice(why) => notes.push(format!("design choice: {why}")),
            InRctr::KnownGap(why) => notes.push(format!("known gap: {why}")),
            InRctr::Run => {}
        }
        if !case.host_ns.is_empty() || !case.rctr_flags.is_empty() {
            notes.push(format!(
                "own namespace: raw `unshare {}`, rctr `{}`",
                case.host_ns.join(" "),
                if case.rctr_flags.is_empty() {
                    "(given by default)".to_string()
                } else {
                    case.rctr_flags.join(" ")
                }
            ));
        }
        let opts: Vec<&str> = case
            .opts
            .iter()
            .chain(case.dopts)
            .chain(case.ropts)
            .copied()
            .collect();
        if !opts.is_empty() {
            notes.push(format!("CRIU options `{}`", opts.join(" ")));
        }
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} |",
            case.area,
            case.name,
            raw.cell(),
            in_rctr.cell(),
            notes.join("; ").replace('|', "\\|")
        );
        let gap = matches!(case.in_rctr, InRctr::KnownGap(_));
        if matches!(raw, Outcome::Pass) {
            raw_passed += 1;
            if matches!(in_rctr, Outcome::Pass) {
                both_passed += 1;
            }
        }
        // A failure in rctr counts unless raw CRIU fails too or it is a documented gap.
        if let Outcome::Fail(e) = in_rctr {
            if !gap && !matches!(raw, Outcome::Fail(_)) {
                regressions.push(format!("{}: {e}", case.name));
            }
        }
    }
    let summary = format!(
        "{} tests: raw CRIU passed {raw_passed}, of which rctr passed {both_passed}; {} regression(s)",
        rows.len(),
        regressions.len()
    );
    let out_dir = workspace_root().join("target/zdtm");
    let _ = std::fs::create_dir_all(&out_dir);
    let results = out_dir.join("results.md");
    let _ = std::fs::write(&results, format!("{table}\n{summary}\n"));
    progress(&format!(
        "{table}\n{summary}\n(written to {})",
        results.display()
    ));
    assert!(
        regressions.is_empty(),
        "zdtm tests that raw CRIU passes fail in rctr:\n{}",
        regressions.join("\n")
    );
}
