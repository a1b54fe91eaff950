//! The events of a build: what the text log prints, what `--log-format json`
//! writes one per line, what the status line shows and what the build report
//! draws. One type, so the four never disagree.

use serde::Serialize;

/// One thing that happened. Serialised with its kind in `event`
/// (`{"event":"hook_end",...}`); field names are a public contract for the
/// JSON log.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A build step a user wants to see.
    Step { message: String },
    /// Worth a user's attention, not an error.
    Warning { message: String },
    /// Detail shown by default (phase cache decisions, the timing table).
    Info { message: String },
    /// Detail for debugging.
    Debug { message: String },
    /// A command about to run, as a shell would spell it.
    Command { line: String },
    /// A line a command printed; `source` names the hook or tool.
    Output { source: String, line: String },
    /// A phase starts; `from` hooks of it were already restored.
    PhaseStart {
        phase: String,
        hooks: usize,
        from: usize,
    },
    PhaseEnd {
        phase: String,
        seconds: f64,
        ok: bool,
    },
    HookStart {
        phase: String,
        element: String,
        hook: String,
    },
    HookEnd {
        phase: String,
        element: String,
        hook: String,
        /// None when the hook was killed by a signal or never started.
        exit_code: Option<i32>,
        seconds: f64,
        ok: bool,
    },
    /// A hook that did not run: its result came from the phase cache.
    Restored {
        phase: String,
        element: String,
        hook: String,
    },
    /// Work of the tool itself (`group`: disk, filesystem, output,
    /// phase-cache) starts or ends.
    TaskStart { group: String, task: String },
    TaskEnd {
        group: String,
        task: String,
        seconds: f64,
        ok: bool,
    },
    /// Bytes that just arrived for one download (sent every MiB or so).
    Download { what: String, bytes: u64 },
    /// A finished output, renamed into place.
    OutputWritten {
        path: String,
        kind: String,
        bytes: u64,
        sha256: String,
    },
    /// The build report was written.
    Report { path: String },
    /// The run ends with an error (the last event of a failed run).
    Error { message: String, exit_code: u8 },
}

impl Event {
    /// How much detail an event is: 0 always shown, 1 by default, 2 debug.
    pub fn level(&self) -> u8 {
        match self {
            Event::Step { .. }
            | Event::Warning { .. }
            | Event::PhaseStart { .. }
            | Event::HookStart { .. }
            | Event::OutputWritten { .. }
            | Event::Report { .. }
            | Event::Error { .. } => 0,
            Event::Info { .. }
            | Event::Output { .. }
            | Event::PhaseEnd { .. }
            | Event::HookEnd { .. }
            | Event::Restored { .. }
            | Event::TaskStart { .. }
            | Event::TaskEnd { .. } => 1,
            Event::Debug { .. } | Event::Command { .. } | Event::Download { .. } => 2,
        }
    }

    /// The line the text log prints, or none for events it leaves to the
    /// timing table and the report.
    pub fn text(&self) -> Option<String> {
        Some(match self {
            Event::Step { message } => format!("==> {message}"),
            Event::Warning { message } => format!("warning: {message}"),
            Event::Info { message } | Event::Debug { message } => message.clone(),
            Event::Command { line } => format!("+ {line}"),
            Event::Output { source, line } if source.is_empty() => line.clone(),
            Event::Output { source, line } => format!("[{source}] {line}"),
            Event::PhaseStart { phase, hooks, from } if *from == 0 => {
                format!("==> running {phase} ({hooks} hooks)")
            }
            Event::PhaseStart { phase, hooks, from } => {
                format!("==> running {phase} from hook {} of {hooks}", from + 1)
            }
            Event::HookStart {
                phase,
                element,
                hook,
            } => format!("==> {phase}/{hook} ({element})"),
            Event::TaskStart { task, .. } => format!("==> {task}"),
            Event::OutputWritten { path, .. } => format!("==> wrote {path}"),
            Event::Report { path } => format!("==> build report {path}"),
            Event::Error { message, .. } => format!("dib-create: error: {message}"),
            Event::PhaseEnd { .. }
            | Event::HookEnd { .. }
            | Event::Restored { .. }
            | Event::TaskEnd { .. }
            | Event::Download { .. } => return None,
        })
    }

    /// Whether the report needs it (kept in memory for the whole build):
    /// the structure of the build, not the lines of its commands.
    pub fn is_structural(&self) -> bool {
        matches!(
            self,
            Event::PhaseStart { .. }
                | Event::PhaseEnd { .. }
                | Event::HookStart { .. }
                | Event::HookEnd { .. }
                | Event::Restored { .. }
                | Event::TaskStart { .. }
                | Event::TaskEnd { .. }
                | Event::OutputWritten { .. }
        )
    }
}

/// An event and when it happened, in seconds from the start of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stamped {
    pub time: f64,
    #[serde(flatten)]
    pub event: Event,
}
