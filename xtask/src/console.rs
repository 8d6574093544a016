//! The terminal side of `deployer::console::Console`: a spinner on a terminal, plain lines
//! elsewhere (CI logs), and yes/no questions that only a person or `--yes` can answer.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use deployer::console::Console;
use indicatif::{ProgressBar, ProgressStyle};

pub struct TerminalConsole {
    spinner: Option<ProgressBar>,
    assume_yes: bool,
}

impl TerminalConsole {
    pub fn new(assume_yes: bool) -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            spinner,
            assume_yes,
        }
    }

    /// Clears the spinner; call before printing the final report.
    pub fn finish(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }
}

impl Drop for TerminalConsole {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Console for TerminalConsole {
    fn line(&mut self, message: &str) {
        match &self.spinner {
            Some(spinner) => spinner.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn waiting(&mut self, message: &str) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(message.to_owned());
        }
    }

    fn confirm(&mut self, question: &str) -> bool {
        if self.assume_yes {
            self.line(&format!("{question} yes (--yes)"));
            return true;
        }
        if !std::io::stdin().is_terminal() {
            self.line(&format!("{question} no answer possible without a terminal"));
            return false;
        }
        let ask = || {
            eprint!("{question} [y/N] ");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
        };
        match &self.spinner {
            Some(spinner) => spinner.suspend(ask),
            None => ask(),
        }
    }
}
