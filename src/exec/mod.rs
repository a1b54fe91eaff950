//! The orchestration: turn a request into a plan, then execute it stage by stage.

pub mod builddir;
pub mod disk;
pub mod execute;
pub mod fill;
pub mod lvm;
pub mod phase_cache;

#[cfg(test)]
mod tests;

use anyhow::Context;
use std::io::Write as _;

use crate::cli::{Cli, PlanFormat};
use crate::plan::{self, Plan};

pub use crate::error::UsageError;

/// Process-wide setup for a build, while still single-threaded: a private
/// mount namespace (mounts die with us even on SIGKILL) unless the plan says
/// not, then the signal handler thread.
pub fn prepare_process(plan: &Plan) -> anyhow::Result<()> {
    if plan.settings.private_namespace && crate::host::is_root() {
        crate::host::mount::enter_private_namespace()?;
    }
    crate::host::procs::become_subreaper();
    crate::host::interrupt::install()?;
    Ok(())
}

/// Runs one invocation of dib-create.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(shell) = cli.completions {
        return crate::cli::setup::completions(shell, &mut std::io::stdout().lock())
            .context("writing the completions");
    }
    if cli.man {
        return crate::cli::setup::man(&mut std::io::stdout().lock())
            .context("writing the manual page");
    }
    if cli.list_elements {
        return list_elements();
    }
    if cli.cache_prune {
        return cache_prune(&cli);
    }
    if let Some(dir) = &cli.cleanup {
        crate::host::interrupt::install()?;
        return cleanup(dir);
    }
    if let Some([old, new]) = cli.lock_diff.as_deref() {
        return crate::lock::print_diff(old, new);
    }
    crate::log::configure(cli.log_format, false);
    if cli.trace > 0 {
        // -x traces hooks; the command lines dib-create runs come with it.
        crate::log::set_verbosity(2);
    }
    reject_unimplemented(&cli)?;
    let plan = plan::build(&cli)?;
    if cli.dry_run {
        return print_plan(&plan, cli.format);
    }
    // Only a build has a status to show.
    crate::log::configure(cli.log_format, crate::log::stderr_wants_status_line());
    prepare_process(&plan)?;
    execute::execute(&plan, Box::new(crate::host::RealHost))?;
    match &plan.boot {
        Some(b) => boot_test(b),
        None => Ok(()),
    }
}

/// `--boot-test`: boots the image just built and waits for its login prompt.
fn boot_test(b: &crate::plan::BootPlan) -> anyhow::Result<()> {
    use crate::boot::{AccelRequest, Arch, BootOptions, Machine};
    let mut o = BootOptions::new(&b.image);
    o.timeout = std::time::Duration::from_secs(b.timeout_secs);
    o.uefi = b.uefi;
    o.arch = Arch::parse(b.arch)
        .ok_or_else(|| anyhow::anyhow!("no boot test for qemu-system-{}", b.arch))?;
    o.machine = if b.raspi3b {
        Machine::Raspi3b
    } else {
        Machine::Auto
    };
    o.accel = match b.accel {
        "kvm" => AccelRequest::Kvm,
        "tcg" => AccelRequest::Tcg,
        _ => AccelRequest::Auto,
    };
    crate::log::step(&format!("boot test of {}", b.image.display()));
    match crate::boot::run(&o) {
        Ok(r) => {
            crate::log::step(&format!(
                "boot test: login prompt after {:.1} s",
                r.login_seconds.unwrap_or_default()
            ));
            Ok(())
        }
        Err(e) if e.is_usage() => Err(UsageError(format!("--boot-test: {e}")).into()),
        Err(e) => Err(anyhow::anyhow!("--boot-test: {e}")),
    }
}

/// Flags that parse (for compatibility) but whose stage is not built yet.
fn reject_unimplemented(cli: &Cli) -> anyhow::Result<()> {
    let pending = [(cli.ramdisk_element.is_some(), "--ramdisk-element")];
    match pending.iter().find(|(set, _)| *set) {
        Some((_, flag)) => Err(UsageError(format!("{flag} is not implemented yet")).into()),
        None => Ok(()),
    }
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

/// `--list-elements`: the element names on ELEMENTS_PATH and the shipped ones.
fn list_elements() -> anyhow::Result<()> {
    let caller: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let set = crate::element::discover(&plan::search_dirs(&caller))?;
    let mut out = std::io::stdout().lock();
    for name in set.elements.keys() {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

/// `--cache-prune`: sweeps the phase cache while no build uses it.
fn cache_prune(cli: &Cli) -> anyhow::Result<()> {
    let caller: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let (cache, settings) = plan::cache_settings(cli, &caller)?;
    let swept = crate::cache::phase::Store::prune(&cache, &phase_cache::sweep_policy(&settings))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", swept.describe())?;
    Ok(())
}

/// `--cleanup DIR`: undo what a killed build left behind.
fn cleanup(dir: &std::path::Path) -> anyhow::Result<()> {
    builddir::cleanup(dir)
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
