//! How the library talks to the person running a command, without knowing about terminals.

/// Output and questions of a long-running command. The command line implements it with a
/// spinner on a terminal and plain lines elsewhere; tests record what was said.
pub trait Console: Send {
    /// A line worth keeping: a step done, a resource event, a change.
    fn line(&mut self, message: &str);
    /// What the command is waiting for now; shown transiently (a spinner), or not at all.
    fn waiting(&mut self, message: &str);
    /// Asks a yes/no question; `false` unless the person (or `--yes`) agrees.
    fn confirm(&mut self, question: &str) -> bool;
}

/// A console that prints nothing and answers every question with a fixed answer; for scripts
/// and tests.
#[derive(Debug, Default)]
pub struct RecordingConsole {
    pub lines: Vec<String>,
    pub questions: Vec<String>,
    pub answer: bool,
}

impl RecordingConsole {
    /// A console that agrees to everything.
    pub fn agreeing() -> Self {
        Self {
            answer: true,
            ..Self::default()
        }
    }
}

impl Console for RecordingConsole {
    fn line(&mut self, message: &str) {
        self.lines.push(message.to_owned());
    }

    fn waiting(&mut self, _message: &str) {}

    fn confirm(&mut self, question: &str) -> bool {
        self.questions.push(question.to_owned());
        self.answer
    }
}
