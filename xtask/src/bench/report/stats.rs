//! Statistics over a workload's rounds: medians, the overhead of a setup over no tracing,
//! ratios of overheads (of the medians, and within each round), and whether an overhead is
//! told apart from the noise.

use super::{Report, Run};
use crate::bench::{Measured, setups::Setup};

/// Which time of a workload run.
#[derive(Clone, Copy)]
pub(super) enum Metric {
    /// Elapsed (CLOCK_MONOTONIC): everything, including the CPU the tracer's consumer and
    /// other work on the machine took from the workload.
    Elapsed,
    /// The workload's own CPU time: the probes run in its context and count; waiting for a
    /// CPU does not.
    Cpu,
}

impl Metric {
    pub(super) fn of(self, measured: &Measured, row: usize) -> f64 {
        match self {
            Metric::Elapsed => measured.ns_per_op[row],
            Metric::Cpu => measured.cpu_ns_per_op[row],
        }
    }
}

pub(super) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

impl Report<'_> {
    pub(super) fn runs(&self, workload: usize, setup: Setup) -> &[Run] {
        self.results[workload]
            .runs
            .get(&setup)
            .map_or(&[], Vec::as_slice)
    }

    /// Median ns per op of `setup` on row `row` of `workload`.
    pub(super) fn ns_per_op(
        &self,
        metric: Metric,
        workload: usize,
        setup: Setup,
        row: usize,
    ) -> Option<f64> {
        median(
            self.runs(workload, setup)
                .iter()
                .map(|r| metric.of(&r.measured, row))
                .collect(),
        )
    }

    pub(super) fn overhead(
        &self,
        metric: Metric,
        workload: usize,
        setup: Setup,
        row: usize,
    ) -> Option<f64> {
        Some(
            self.ns_per_op(metric, workload, setup, row)?
                - self.ns_per_op(metric, workload, Setup::Bare, row)?,
        )
    }

    /// Whether the overhead of `setup` is smaller than twice the median absolute deviation of
    /// the no-tracing runs, i.e. not told apart from the noise (robust to one outlier run).
    pub(super) fn within_noise(
        &self,
        metric: Metric,
        workload: usize,
        setup: Setup,
        row: usize,
    ) -> bool {
        let bare: Vec<f64> = self
            .runs(workload, Setup::Bare)
            .iter()
            .map(|r| metric.of(&r.measured, row))
            .collect();
        let deviation = median(bare.clone())
            .and_then(|m| median(bare.iter().map(|v| (v - m).abs()).collect()))
            .unwrap_or(0.0);
        self.overhead(metric, workload, setup, row)
            .is_none_or(|o| o.abs() < 2.0 * deviation)
    }

    /// `a`'s overhead over `b`'s within each round (the runs of one round are minutes apart at
    /// most, so a load that drifts over the whole bench cancels out), for the rounds where `b`'s
    /// overhead is positive.
    pub(super) fn paired_ratios(
        &self,
        metric: Metric,
        workload: usize,
        row: usize,
        a: Setup,
        b: Setup,
    ) -> Vec<f64> {
        let time = |setup| {
            self.runs(workload, setup)
                .iter()
                .map(|r| metric.of(&r.measured, row))
                .collect::<Vec<f64>>()
        };
        let (bare, a, b) = (time(Setup::Bare), time(a), time(b));
        bare.iter()
            .zip(a.iter().zip(&b))
            .filter(|(bare, (_, b))| **b > **bare)
            .map(|(bare, (a, b))| (a - bare) / (b - bare))
            .collect()
    }

    /// `a`'s overhead over `b`'s, when `b` has a positive one.
    pub(super) fn ratio(
        &self,
        metric: Metric,
        workload: usize,
        row: usize,
        a: Setup,
        b: Setup,
    ) -> Option<f64> {
        let denominator = self.overhead(metric, workload, b, row)?;
        (denominator > 0.0).then(|| {
            self.overhead(metric, workload, a, row)
                .map(|o| o / denominator)
        })?
    }

    /// The largest loss of the agent setups over all runs of `workload`.
    pub(super) fn agent_max_lost(&self, workload: usize) -> Option<u64> {
        [Setup::AgentNull, Setup::AgentPipe, Setup::AgentMetrics]
            .iter()
            .flat_map(|s| self.runs(workload, *s))
            .map(|r| r.traced.as_ref().and_then(|t| t.lost))
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
