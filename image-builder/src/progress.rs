//! Step reporting: a spinner with elapsed time on a terminal, plain lines
//! otherwise (CI logs, pipes), nothing on stdout when `--json` owns it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    tty: bool,
    quiet: bool,
    started: Instant,
    pub steps: Vec<(String, f64)>,
}

pub struct Step<'a> {
    owner: &'a mut Progress,
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            started: Instant::now(),
            steps: Vec::new(),
        }
    }

    pub fn step(&mut self, name: &str) -> Step<'_> {
        let bar = if self.tty && !self.quiet {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            if !self.quiet {
                eprintln!("==> {name}");
            }
            None
        };
        Step {
            owner: self,
            name: name.to_string(),
            started: Instant::now(),
            bar,
        }
    }

    /// Loud, even with --json: a warning the operator must not miss.
    pub fn warn(&self, text: &str) {
        eprintln!("WARNING: {text}");
    }

    pub fn total(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Step<'_> {
    pub fn done(self, detail: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.owner.quiet {
            let sep = if detail.is_empty() { "" } else { ": " };
            eprintln!("    {} done in {secs:.1}s{sep}{detail}", self.name);
        }
        self.owner.steps.push((self.name.clone(), secs));
    }
}
