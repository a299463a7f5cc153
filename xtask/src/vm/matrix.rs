//! The kernel × backend table vm-test ends with, and under it the retries after kernel crashes
//! and what went wrong in each failed cell.

use super::cell::Cell;

pub(super) fn print_matrix(cells: &[Cell]) {
    let kernel_width = cells
        .iter()
        .map(|c| c.kernel.len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!();
    println!(
        "{:kernel_width$}  {:10}  {:6}  {:>6}  {:>6}  {:>7}",
        "kernel", "backend", "result", "passed", "failed", "time"
    );
    for cell in cells {
        let result = if cell.outcome.ok() { "ok" } else { "FAILED" };
        println!(
            "{:kernel_width$}  {:10}  {:6}  {:>6}  {:>6}  {:>6.0}s",
            cell.kernel,
            cell.backend,
            result,
            cell.outcome.passed,
            cell.outcome.failed,
            cell.elapsed.as_secs_f64()
        );
    }
    for cell in cells {
        for (run, (crash, log)) in cell.crashed_before.iter().enumerate() {
            println!();
            println!(
                "{} / {}: the kernel crashed in run {} of {}: {crash} (see {})",
                cell.kernel,
                cell.backend,
                run + 1,
                cell.crashed_before.len() + 1,
                log.display()
            );
        }
    }
    for cell in cells.iter().filter(|c| !c.outcome.ok()) {
        println!();
        println!(
            "{} / {}: see {}",
            cell.kernel,
            cell.backend,
            cell.log.display()
        );
        for test in &cell.outcome.failed_tests {
            println!("  failed: {test}");
        }
        for problem in &cell.outcome.problems {
            println!("  {problem}");
        }
        for panic in &cell.outcome.panics {
            for line in panic.lines() {
                println!("  | {line}");
            }
        }
    }
}
