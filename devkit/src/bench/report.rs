//! Figures: samples become medians and spreads, measurements become ratios to
//! a reference measured around them in the same run, and the whole becomes a
//! table or JSON.

use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

/// Median and spread of a few samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stat {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// Every sample, in the order measured.
    pub samples: Vec<f64>,
}

impl Stat {
    /// The median and spread of `samples`; `None` when there are none.
    #[must_use]
    pub fn of(samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            f64::midpoint(sorted[mid - 1], sorted[mid])
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples,
        })
    }
}

/// The `q`-quantile (0..=1) of sorted values, nearest rank; 0 when empty.
#[must_use]
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Which scenario measured it (`drain`, `baseline`, …).
    pub scenario: String,
    /// What ran: client, concurrency, events, tracing, sizes.
    pub variant: String,
    /// What was measured (`drain rate`, `publish→ack p99`, …).
    pub metric: String,
    /// `msg/s`, `ms` or `MiB`.
    pub unit: String,
    /// Median and spread over the rounds.
    pub value: Stat,
    /// The same samples divided by the reference measured around each of them.
    pub ratio: Option<Stat>,
    /// What `ratio` is relative to.
    pub ratio_to: Option<String>,
}

/// One measured value, waiting for its reference samples.
#[derive(Debug)]
struct Sample {
    value: f64,
    /// How many reference samples existed when it was taken: the reference
    /// runs just before and just after it are `refs[at - 1]` and `refs[at]`.
    at: usize,
}

#[derive(Debug)]
struct Series {
    scenario: String,
    variant: String,
    metric: String,
    unit: String,
    reference: Option<String>,
    samples: Vec<Sample>,
}

/// Collects samples as they are measured and turns them into rows.
///
/// A *reference* (the raw-client ceiling, the raw publisher) is measured
/// before and after every measurement that is compared with it, so each
/// ratio divides by the mean of its two neighbours: drift of the machine
/// (other builds, the broker compacting) cancels out to first order.
#[derive(Debug, Default)]
pub struct Collector {
    series: Vec<Series>,
    refs: Vec<(String, Vec<f64>)>,
}

impl Collector {
    /// Records one run of the reference named `name`.
    pub fn reference(&mut self, name: &str, value: f64) {
        match self.refs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(value),
            None => self.refs.push((name.to_owned(), vec![value])),
        }
    }

    fn refs_of(&self, name: &str) -> &[f64] {
        self.refs
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// Records one sample of a figure; with `reference`, it will be reported
    /// as a ratio to the reference runs around it.
    pub fn sample(&mut self, key: (&str, &str, &str, &str), reference: Option<&str>, value: f64) {
        let (scenario, variant, metric, unit) = key;
        let at = reference.map_or(0, |r| self.refs_of(r).len());
        let sample = Sample { value, at };
        if let Some(s) = self
            .series
            .iter_mut()
            .find(|s| s.scenario == scenario && s.variant == variant && s.metric == metric)
        {
            s.samples.push(sample);
            return;
        }
        self.series.push(Series {
            scenario: scenario.to_owned(),
            variant: variant.to_owned(),
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            reference: reference.map(str::to_owned),
            samples: vec![sample],
        });
    }

    /// The rows, in the order their figures were first measured.
    #[must_use]
    pub fn rows(&self) -> Vec<Row> {
        self.series
            .iter()
            .filter_map(|s| {
                let value = Stat::of(s.samples.iter().map(|x| x.value).collect())?;
                let ratio = s.reference.as_deref().and_then(|r| {
                    let refs = self.refs_of(r);
                    let ratios = s
                        .samples
                        .iter()
                        .filter_map(|x| around(refs, x.at).map(|base| x.value / base))
                        .collect();
                    Stat::of(ratios)
                });
                Some(Row {
                    scenario: s.scenario.clone(),
                    variant: s.variant.clone(),
                    metric: s.metric.clone(),
                    unit: s.unit.clone(),
                    ratio_to: ratio.as_ref().and(s.reference.clone()),
                    value,
                    ratio,
                })
            })
            .collect()
    }
}

/// The mean of the reference runs just before and just after position `at`.
fn around(refs: &[f64], at: usize) -> Option<f64> {
    let before = at.checked_sub(1).and_then(|i| refs.get(i));
    let after = refs.get(at);
    match (before, after) {
        (Some(a), Some(b)) => Some(f64::midpoint(*a, *b)),
        (Some(x), None) | (None, Some(x)) => Some(*x),
        (None, None) => None,
    }
    .filter(|x| *x > 0.0)
}

/// Everything `warden-dev bench` found, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The throwaway prefix the bench ran on (deleted afterwards).
    pub prefix: String,
    /// The broker, password redacted.
    pub broker: String,
    /// Messages per drain, baseline and publish run.
    pub n: u64,
    /// Rounds.
    pub repeat: u32,
    /// The scenarios that ran.
    pub scenarios: Vec<String>,
    /// CPUs this process could use.
    pub cpus: usize,
    /// The log filter in force (`RUST_LOG`); logging is part of the measured path.
    pub log_filter: String,
    /// Wall time of the whole bench, seconds.
    pub seconds: f64,
    /// What each reference is.
    pub references: Vec<(String, String)>,
    /// The figures.
    pub rows: Vec<Row>,
    /// How to read them.
    pub notes: Vec<String>,
    /// Drains after which messages came back to the queue unacknowledged.
    pub leftovers: Vec<String>,
}

fn number(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" => format!("{v:.0}"),
        "ms" => format!("{v:.2}"),
        _ => format!("{v:.1}"),
    }
}

impl Report {
    /// The human-readable table.
    #[must_use]
    pub fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "scenario",
            "variant",
            "metric",
            "median",
            "spread (min–max)",
            "× reference",
        ]);
        for r in &self.rows {
            let spread = if r.value.samples.len() > 1 {
                format!(
                    "{}–{}",
                    number(r.value.min, &r.unit),
                    number(r.value.max, &r.unit)
                )
            } else {
                "—".to_owned()
            };
            let ratio = match (&r.ratio, &r.ratio_to) {
                (Some(q), Some(to)) if q.samples.len() > 1 => {
                    format!("{:.2} ({:.2}–{:.2}) {to}", q.median, q.min, q.max)
                }
                (Some(q), Some(to)) => format!("{:.2} {to}", q.median),
                _ => String::new(),
            };
            table.add_row([
                r.scenario.clone(),
                r.variant.clone(),
                r.metric.clone(),
                format!("{} {}", number(r.value.median, &r.unit), r.unit),
                spread,
                ratio,
            ]);
        }
        for i in 3..=5 {
            if let Some(c) = table.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Stat::of(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert!((s.median - 2.5).abs() < 1e-9);
        assert!((s.min - 1.0).abs() < 1e-9 && (s.max - 4.0).abs() < 1e-9);
        assert_eq!(s.samples, vec![4.0, 1.0, 3.0, 2.0]);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn each_ratio_divides_by_the_reference_runs_around_it() {
        let mut c = Collector::default();
        c.reference("ceiling", 100.0);
        c.sample(("drain", "w", "rate", "msg/s"), Some("ceiling"), 60.0);
        c.reference("ceiling", 200.0);
        c.sample(("drain", "w", "rate", "msg/s"), Some("ceiling"), 100.0);
        c.reference("ceiling", 200.0);
        let rows = c.rows();
        assert_eq!(rows.len(), 1);
        let ratio = rows[0].ratio.as_ref().unwrap();
        // 60 / mean(100, 200) and 100 / mean(200, 200).
        assert!((ratio.samples[0] - 0.4).abs() < 1e-9);
        assert!((ratio.samples[1] - 0.5).abs() < 1e-9);
        assert_eq!(rows[0].ratio_to.as_deref(), Some("ceiling"));
    }

    #[test]
    fn a_figure_without_reference_runs_has_no_ratio() {
        let mut c = Collector::default();
        c.sample(("drain", "w", "rate", "msg/s"), Some("ceiling"), 60.0);
        c.sample(("startup", "w", "rss", "MiB"), None, 9.0);
        let rows = c.rows();
        assert!(
            rows.iter()
                .all(|r| r.ratio.is_none() && r.ratio_to.is_none())
        );
    }
}
