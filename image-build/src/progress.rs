//! Progress on stderr: spinners and bars on a terminal, one plain line per step elsewhere (CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a build reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines on stderr, one when a step starts and one when it ends.
    Plain,
    /// Nothing (logs still go through `tracing`).
    Quiet,
}

#[derive(Debug)]
pub(crate) struct Progress {
    mode: ProgressMode,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if !std::io::stderr().is_terminal() => ProgressMode::Plain,
            other => other,
        };
        Progress { mode }
    }

    /// Starts a step; it ends when [`Step::done`] is called or, as failed, when dropped.
    pub(crate) fn step(&self, message: impl Into<String>) -> Step {
        let message = message.into();
        tracing::info!(step = %message, "start");
        let bar = match self.mode {
            ProgressMode::Auto => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(spinner_style());
                bar.set_message(message.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            ProgressMode::Plain => {
                plain(&format!("... {message}"));
                None
            }
            ProgressMode::Quiet => None,
        };
        Step {
            title: message.clone(),
            message,
            bar,
            mode: self.mode,
            started: Instant::now(),
            finished: false,
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}] {bar:30.cyan/blue} {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
        .progress_chars("=> ")
}

/// A finished step: its message only (which already carries the elapsed time).
fn finished_style(mark: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{mark} {{msg}}"))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn plain(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// One running step.
#[derive(Debug)]
pub(crate) struct Step {
    /// What the step was started as; its end is reported under this name.
    title: String,
    /// What it is doing now.
    message: String,
    bar: Option<ProgressBar>,
    mode: ProgressMode,
    started: Instant,
    finished: bool,
}

impl Step {
    /// Shows `position` of `total` (a bar on a terminal).
    pub(crate) fn set_progress(&self, position: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length() != Some(total) {
                bar.set_style(bar_style());
                bar.set_length(total);
            }
            bar.set_position(position);
        }
    }

    /// Replaces the step's message (a sub-step of a long step).
    pub(crate) fn set_message(&mut self, message: impl Into<String>) {
        self.message = message.into();
        tracing::info!(step = %self.message, "start");
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(self.message.clone()),
            (None, ProgressMode::Plain) => plain(&format!("... {}", self.message)),
            _ => {}
        }
    }

    /// Ends the step successfully, with an optional detail (a size, a count).
    pub(crate) fn done(mut self, detail: impl AsRef<str>) {
        self.finished = true;
        let detail = detail.as_ref();
        let elapsed = self.started.elapsed().as_secs_f64();
        let line = if detail.is_empty() {
            format!("{} ({elapsed:.1} s)", self.title)
        } else {
            format!("{}: {detail} ({elapsed:.1} s)", self.title)
        };
        tracing::info!(step = %self.title, detail, elapsed_s = elapsed, "done");
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_style(finished_style("✓"));
                bar.finish_with_message(line);
            }
            (None, ProgressMode::Plain) => plain(&format!("ok  {line}")),
            _ => {}
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_style(finished_style("✗"));
                bar.abandon_with_message(format!("{} (failed)", self.message));
            }
            (None, ProgressMode::Plain) => plain(&format!("!!  {} (failed)", self.message)),
            _ => {}
        }
    }
}
