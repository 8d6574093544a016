//! How `cargo xtask reconcile` shows its progress: a bar on a terminal (items scanned against
//! DescribeTable's estimate, with rate and ETA, and objects listed), and elsewhere (CI logs) a
//! line when each phase starts.

use std::io::IsTerminal;
use std::time::Duration;

use deployer::reconcile::{Phase, ReconcileProgress};
use indicatif::{ProgressBar, ProgressStyle};

pub enum ProgressView {
    Bar { bar: ProgressBar, phase: Phase },
    Lines { phase: Option<Phase> },
}

impl ProgressView {
    /// A bar when standard error is a terminal, else plain lines.
    pub fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines { phase: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        Self::Bar {
            bar,
            phase: Phase::Reading,
        }
    }

    pub fn show(&mut self, progress: &ReconcileProgress) {
        match self {
            Self::Bar { bar, phase } => {
                if let Some(note) = &progress.note {
                    bar.println(note);
                }
                if *phase != progress.phase {
                    *phase = progress.phase;
                    bar.set_style(spinner_style());
                }
                match progress.phase {
                    Phase::Reading => show_reading(bar, progress),
                    Phase::Comparing => bar.set_message(comparing(progress)),
                    Phase::Done => bar.finish_and_clear(),
                }
            }
            Self::Lines { phase } => {
                if let Some(note) = &progress.note {
                    eprintln!("{note}");
                    // Sent before the estimate is known: the phase's line waits for it.
                    return;
                }
                if *phase == Some(progress.phase) {
                    return;
                }
                *phase = Some(progress.phase);
                match progress.phase {
                    Phase::Reading => eprintln!(
                        "reading {} scan segment(s){} and listing the bucket",
                        progress.segments,
                        progress
                            .expected_items
                            .map(|n| format!(" (about {n} items)"))
                            .unwrap_or_default()
                    ),
                    Phase::Comparing => eprintln!(
                        "read {} items and {} objects; comparing",
                        progress.items_scanned, progress.objects_listed
                    ),
                    Phase::Done => {}
                }
            }
        }
    }

    /// Clears the bar before the report is printed.
    pub fn finish(&self) {
        if let Self::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

fn show_reading(bar: &ProgressBar, progress: &ReconcileProgress) {
    // The estimate may be hours old: a table that grew since runs past it, and the bar then
    // counts on without a length.
    match progress.expected_items {
        Some(expected) if expected >= progress.items_scanned && expected > 0 => {
            if bar.length() != Some(expected) {
                bar.set_length(expected);
                bar.set_style(bar_style());
            }
        }
        _ => {
            if bar.length().is_some() {
                bar.unset_length();
                bar.set_style(spinner_style());
            }
        }
    }
    bar.set_position(progress.items_scanned);
    bar.set_message(format!(
        "{} objects listed{}, {}/{} segments done",
        progress.objects_listed,
        if progress.listing_done { " (all)" } else { "" },
        progress.segments_done,
        progress.segments
    ));
}

fn comparing(progress: &ReconcileProgress) -> String {
    let mut line = format!("comparing: {} users judged", progress.judged);
    if progress.repaired + progress.failed > 0 {
        line.push_str(&format!(
            ", {} repaired, {} failed",
            progress.repaired, progress.failed
        ));
    }
    line
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} scanning [{bar:30}] {human_pos}/~{human_len} items, {per_sec}, ETA {eta} · {msg}",
    )
    .expect("the template is valid")
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {human_pos} items scanned · {msg}")
        .expect("the template is valid")
}
