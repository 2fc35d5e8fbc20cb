//! The order of the steps: every measurement compared with the ceiling sits
//! between two ceiling runs, and later rounds run the measurements in
//! reverse, so the drift of a shared machine cancels out.

use super::args::{BenchArgs, Scenario};
use super::drain::{Acks, DrainConfig, Tracing};
use super::scenarios::{BACKLOGS, Step};

/// The trace-export settings every drain in this process runs with; see
/// [`Tracing`] for why export is measured by the `tracing` scenario instead.
const DRAIN_TRACING: &[Tracing] = &[Tracing::Off];

/// The steps `args` ask for, in the order they run.
pub(super) fn plan(args: &BenchArgs) -> Vec<Step> {
    let has = |s| args.scenarios.contains(&s);
    let mut steps = Vec::new();
    // Its runs are its repeats: once, whatever `--repeat` says.
    if has(Scenario::Reauth) {
        steps.push(Step::Reauth);
    }
    for round in 0..args.repeat {
        steps.extend(unpaired(args));
        let mut measured = against_the_ceiling(args);
        if round % 2 == 1 {
            measured.reverse();
        }
        if !measured.is_empty() {
            steps.push(Step::Ceiling);
            for m in measured {
                steps.extend([m, Step::Ceiling]);
            }
        }
    }
    steps
}

/// One round of the steps that are not compared with the ceiling.
fn unpaired(args: &BenchArgs) -> Vec<Step> {
    let has = |s| args.scenarios.contains(&s);
    let mut steps = Vec::new();
    if has(Scenario::Startup) {
        steps.push(Step::Startup);
    }
    if has(Scenario::Latency) {
        steps.push(Step::Latency);
    }
    if has(Scenario::Tracing) {
        // Each export-on run between two export-off runs of the same round.
        steps.extend([Step::Traced(false), Step::Traced(true), Step::Traced(false)]);
    }
    if has(Scenario::Publish) {
        steps.extend([Step::RawPublish, Step::WardenPublish, Step::RawPublish]);
    }
    if has(Scenario::Suspects) {
        steps.push(Step::Suspects);
    }
    steps
}

/// One round of the measurements compared with the ceiling.
fn against_the_ceiling(args: &BenchArgs) -> Vec<Step> {
    let has = |s| args.scenarios.contains(&s);
    let mut measured = Vec::new();
    if has(Scenario::Baseline) {
        measured.push(Step::Raw(64, Acks::Coalesced(32)));
        measured.push(Step::Raw(64, Acks::EachAwaited));
        measured.push(Step::RawEvents);
    }
    if has(Scenario::Drain) {
        for &tracing in DRAIN_TRACING {
            for events in [false, true] {
                for &concurrency in &args.concurrency {
                    measured.push(Step::Drain(DrainConfig {
                        concurrency,
                        events,
                        tracing,
                    }));
                }
            }
        }
    }
    if has(Scenario::Backlog) {
        for size in BACKLOGS.into_iter().filter(|s| *s <= args.backlog_max) {
            measured.push(Step::Backlog(size));
        }
    }
    if has(Scenario::Replicas) {
        measured.extend([Step::Replicas(1), Step::Replicas(2)]);
    }
    measured
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// `bench --scenarios …` as `warden-dev` parses it.
    fn args(line: &str) -> BenchArgs {
        let words = line.split_whitespace().filter(|w| *w != "bench");
        Line::try_parse_from(words).unwrap().args
    }

    #[test]
    fn every_measurement_is_between_two_ceiling_runs() {
        let steps = plan(&args(
            "warden-dev bench --scenarios drain,baseline --repeat 2",
        ));
        let kinds: Vec<bool> = steps.iter().map(|s| matches!(s, Step::Ceiling)).collect();
        // C m C m C … C, per round.
        assert!(kinds.first().copied().unwrap());
        assert!(kinds.last().copied().unwrap());
        assert!(kinds.windows(2).all(|w| w[0] || w[1]), "{steps:?}");
        // 3 raw + 4 concurrencies × events off/on, per round.
        assert_eq!(kinds.iter().filter(|c| !**c).count(), 2 * (3 + 8));
    }

    #[test]
    fn the_million_backlog_runs_only_when_asked_for() {
        let count = |line| {
            plan(&args(line))
                .iter()
                .filter(|s| matches!(s, Step::Backlog(_)))
                .count()
        };
        assert_eq!(count("warden-dev bench --scenarios backlog"), 2);
        assert_eq!(
            count("warden-dev bench --scenarios backlog --backlog-max 1000000"),
            3
        );
    }

    #[test]
    fn latency_alone_needs_no_ceiling() {
        let steps = plan(&args("warden-dev bench --scenarios latency"));
        assert!(matches!(steps.as_slice(), [Step::Latency]));
    }
}
