//! The orchestration: turn a request into a plan, then execute it stage by stage.

use anyhow::Context;

use crate::cli::{Cli, PlanFormat};
use crate::plan::{self, Plan};

/// Errors a user caused (bad input): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one invocation of dib-create.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.cleanup {
        return cleanup(dir);
    }
    let plan = plan::build(&cli)?;
    if cli.dry_run {
        return print_plan(&plan, cli.format);
    }
    execute(&plan, &cli)
}

/// Prints the plan on stdout in the requested format.
pub fn print_plan(plan: &Plan, format: PlanFormat) -> anyhow::Result<()> {
    let text = match format {
        PlanFormat::Json => {
            serde_json::to_string_pretty(plan).context("rendering the plan as JSON")? + "\n"
        }
        PlanFormat::Yaml => serde_saphyr::to_string(plan).context("rendering the plan as YAML")?,
        PlanFormat::Text => plan::render_text(plan),
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the plan to stdout")
}

/// Executes a plan: the build proper. The stages land here in later work.
pub fn execute(plan: &Plan, cli: &Cli) -> anyhow::Result<()> {
    let _ = (plan, cli);
    Err(UsageError("building is not wired yet; use --dry-run to see the plan".into()).into())
}

/// `--cleanup DIR`: undo what a killed build left behind.
fn cleanup(dir: &std::path::Path) -> anyhow::Result<()> {
    Err(UsageError(format!(
        "--cleanup {} is not implemented yet",
        dir.display()
    ))
    .into())
}

/// The error chain, printed once: outermost context first.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join("\n  caused by: ")
}

/// 2 for bad input, 130/143 for signals, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(sig) = crate::host::interrupt::signal() {
        return 128u8.saturating_add(sig as u8);
    }
    let bad_input = e.chain().any(|c| {
        c.is::<UsageError>()
            || c.is::<crate::element::ElementError>()
            || c.downcast_ref::<plan::PlanError>()
                .is_some_and(plan::PlanError::is_bad_input)
    });
    if bad_input {
        return 2;
    }
    1
}
