//! Runs every corpus case against real pgAudit 1.7 and pgaudit_siem and compares the
//! AUDIT lines of both server logs, in order. Prints `N/M identical` and the diffs; fails
//! on any difference that the case does not document.

use std::path::Path;

use pgaudit_compat::{load_corpus, Twins};

#[test]
fn corpus_lines_are_identical_to_pgaudit() {
    let corpus = load_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    assert!(!corpus.is_empty());
    let only = std::env::var("PGAUDIT_COMPAT_CASE").ok();
    let twins = Twins::for_corpus();
    let (mut identical, mut total, mut failures) = (0, 0, Vec::new());
    for case in corpus
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
    {
        let result = twins.run_case(case);
        let (same, lines) = result.score();
        identical += same;
        total += lines;
        println!("{:<40} {same}/{lines} identical", case.name);
        if std::env::var_os("PGAUDIT_COMPAT_VERBOSE").is_some() {
            println!("{}", result.diff());
        }
        if !result.is_identical() {
            println!("{}", result.diff());
            failures.push(case.name.clone());
        }
        if !case.deviations.is_empty() && result.oracle.len() == result.oracle_kept.len() {
            failures.push(format!(
                "{} (declares {:?} but pgAudit showed none of it)",
                case.name, case.deviations
            ));
        }
        assert!(
            !result.oracle.is_empty(),
            "{}: pgAudit logged nothing; the case tests nothing",
            case.name
        );
    }
    println!("\ncorpus: {identical}/{total} identical");
    assert!(failures.is_empty(), "cases with differences: {failures:?}");
    if only.is_none() {
        assert!(
            total >= 300,
            "the corpus must hold at least 300 reference lines, has {total}"
        );
    }
}
