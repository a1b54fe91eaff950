//! Running element phases: the merged hooks tree, the per-phase environment
//! (environment.d sourced once per phase, where the phase runs), one process
//! per hook through its own shebang, timings, and `break=` shells.

pub mod tree;

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::element::envd;
use crate::element::hooks as element_hooks;
use crate::host::{Cmd, Journal};
use crate::log::{self, Event};
use crate::plan::Plan;
use crate::rootfs::chroot::IN_TARGET;

/// PATH inside the chroot: our build-time helpers first.
pub const CHROOT_PATH: &str =
    "/tmp/in_target.d/dib-create/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub use crate::phase::Place;

/// Where `phase` (a hook directory) runs.
pub fn place_of(phase: &str) -> Place {
    crate::phase::Phase::from_name(phase).map_or(Place::Outside, |p| p.place())
}

/// A hook that failed: what a user needs to find and fix it.
#[derive(Debug, thiserror::Error)]
#[error(
    "hook {script} of element {element} failed in phase {phase} (exit code {code}); last output:\n{tail}"
)]
pub struct HookFailed {
    pub phase: String,
    pub element: String,
    pub script: String,
    pub code: String,
    pub tail: String,
}

/// One row of the timing table.
#[derive(Clone, Debug)]
pub struct Timing {
    pub phase: String,
    pub element: String,
    pub script: String,
    pub elapsed: Duration,
    pub ok: bool,
}

/// The directories of one build that hooks see.
#[derive(Clone, Debug)]
pub struct BuildDirs {
    pub build: PathBuf,
    pub target: PathBuf,
    pub hooks: PathBuf,
}

/// Runs phases of a plan and keeps their timings.
pub struct PhaseRunner<'a> {
    plan: &'a Plan,
    dirs: BuildDirs,
    extra_env: BTreeMap<String, String>,
    pub timings: Vec<Timing>,
    /// What block-device.d hooks printed: DIB reads `IMAGE_BLOCK_DEVICE=`
    /// lines from it.
    pub block_device_output: String,
}

impl<'a> PhaseRunner<'a> {
    pub fn new(plan: &'a Plan, dirs: BuildDirs) -> Self {
        PhaseRunner {
            plan,
            dirs,
            extra_env: BTreeMap::new(),
            timings: Vec::new(),
            block_device_output: String::new(),
        }
    }

    /// Adds or overrides a variable for all later phases (IMAGE_BLOCK_DEVICE, ...).
    pub fn set_env(&mut self, k: &str, v: impl Into<String>) {
        self.extra_env.insert(k.to_string(), v.into());
    }

    /// Points later phases at another root (the mounted image).
    pub fn set_target(&mut self, target: &Path) {
        self.dirs.target = target.to_path_buf();
    }

    /// The environment a phase starts from, before environment.d.
    pub fn base_env(&self, place: Place) -> BTreeMap<String, String> {
        let mut env = self.plan.hook_env.clone();
        let d = &self.dirs;
        for (k, v) in [
            ("TMP_BUILD_DIR", &d.build),
            ("TARGET_ROOT", &d.target),
            ("TMP_MOUNT_PATH", &d.target),
            ("TMP_HOOKS_PATH", &d.hooks),
        ] {
            env.insert(k.into(), v.display().to_string());
        }
        env.insert("TMP_IMAGE_DIR".into(), d.build.display().to_string());
        env.insert("LC_ALL".into(), "C".into());
        env.extend(self.extra_env.clone());
        env.insert(
            "PATH".into(),
            phase_path(place, &env, &self.plan.settings.data_dir),
        );
        if place == Place::Chroot {
            for k in ["TMPDIR", "TMP", "TEMP"] {
                env.remove(k);
            }
        }
        env
    }

    /// Runs every hook of `phase` (if it has any) and honours `break=`.
    pub fn run_phase(&mut self, journal: &mut Journal, phase: &str) -> anyhow::Result<()> {
        self.run_phase_from(journal, phase, 0, &mut NoObserver)
    }

    /// Runs the hooks of `phase` after the first `skip` (those ran before a
    /// cached snapshot was taken), telling `obs` before and after each one.
    pub fn run_phase_from(
        &mut self,
        journal: &mut Journal,
        phase: &str,
        skip: usize,
        obs: &mut dyn HookObserver,
    ) -> anyhow::Result<()> {
        let hooks = list_hooks(&self.dirs.hooks, phase);
        if skip == 0 {
            maybe_break(
                &self.plan.settings,
                &format!("before-{}", phase.trim_end_matches(".d")),
                self.shell_cmd(phase),
            );
        }
        if hooks.is_empty() {
            log::info(&format!("phase {phase}: no hooks"));
            return Ok(());
        }
        self.report_restored(phase, &hooks[..skip.min(hooks.len())]);
        if skip >= hooks.len() {
            return Ok(());
        }
        log::event(Event::PhaseStart {
            phase: phase.into(),
            hooks: hooks.len(),
            from: skip,
        });
        let phase_started = std::time::Instant::now();
        let result = self.run_hooks(journal, phase, &hooks, skip, obs);
        log::event(Event::PhaseEnd {
            phase: phase.into(),
            seconds: phase_started.elapsed().as_secs_f64(),
            ok: result.is_ok(),
        });
        result?;
        maybe_break(
            &self.plan.settings,
            &format!("after-{}", phase.trim_end_matches(".d")),
            self.shell_cmd(phase),
        );
        Ok(())
    }

    /// Tells the log (and so the report) which hooks of `phase` the phase
    /// cache restored instead of running.
    pub fn report_restored(&self, phase: &str, hooks: &[String]) {
        for hook in hooks {
            log::event(Event::Restored {
                phase: phase.into(),
                element: self.element_of(phase, hook),
                hook: hook.clone(),
            });
        }
    }

    /// Every hook of `phase` from `skip` on, telling `obs` about each.
    fn run_hooks(
        &mut self,
        journal: &mut Journal,
        phase: &str,
        hooks: &[String],
        skip: usize,
        obs: &mut dyn HookObserver,
    ) -> anyhow::Result<()> {
        let place = place_of(phase);
        let env = self.phase_env(journal, place)?;
        for (i, hook) in hooks.iter().enumerate().skip(skip) {
            let file = self.dirs.hooks.join(phase).join(hook);
            obs.before(phase, hook, &file)?;
            let started = std::time::Instant::now();
            if let Err(e) = self.run_hook(journal, phase, place, hook, &env) {
                maybe_break(&self.plan.settings, "after-error", self.shell_cmd(phase));
                return Err(e);
            }
            obs.after(
                journal,
                &HookDone {
                    phase,
                    name: hook,
                    position: i + 1,
                    count: hooks.len(),
                    elapsed: started.elapsed(),
                },
            )?;
        }
        Ok(())
    }

    /// Sources environment.d once for a phase, where the phase runs.
    fn phase_env(
        &self,
        journal: &mut Journal,
        place: Place,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let base = self.base_env(place);
        if self.plan.environment.is_empty() {
            return Ok(base);
        }
        let dir = match place {
            Place::Chroot => PathBuf::from(IN_TARGET).join("environment.d"),
            Place::Outside => self.dirs.hooks.join("environment.d"),
        };
        let files: Vec<PathBuf> = self
            .plan
            .environment
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| dir.join(n))
            .collect();
        let chroot = (place == Place::Chroot).then_some(self.dirs.target.as_path());
        let cmd = envd::command(&files, &base, &self.dirs.build, chroot);
        Ok(envd::read_result(journal.run(cmd), &base)?)
    }

    fn run_hook(
        &mut self,
        journal: &mut Journal,
        phase: &str,
        place: Place,
        script: &str,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let script = script.to_string();
        let element = self.element_of(phase, &script);
        let prog = match place {
            Place::Chroot => PathBuf::from(format!("{IN_TARGET}/{phase}/{script}")),
            Place::Outside => self.dirs.hooks.join(phase).join(&script),
        };
        log::event(Event::HookStart {
            phase: phase.into(),
            element: element.clone(),
            hook: script.clone(),
        });
        let mut cmd = Cmd::new(format!("{phase}/{script}"), &prog)
            .env_clear()
            .envs(env)
            .log_prefix(format!("{element}/{phase}/{script}"));
        if place == Place::Chroot {
            cmd = cmd.chroot(&self.dirs.target);
        } else {
            cmd = cmd.cwd(&self.dirs.build);
        }
        let started = std::time::Instant::now();
        if phase == "block-device.d" {
            cmd = cmd.keep_stdout();
        }
        let result = journal.run(cmd);
        if place == Place::Outside {
            // Inside the chroot, stragglers are stopped when the chroot goes.
            journal.host().stop_orphans();
        }
        let elapsed = started.elapsed();
        if let Ok(out) = &result {
            self.block_device_output
                .push_str(&String::from_utf8_lossy(&out.stdout));
        }
        log::event(Event::HookEnd {
            phase: phase.into(),
            element: element.clone(),
            hook: script.clone(),
            exit_code: match &result {
                Ok(_) => Some(0),
                Err(e) => e.exit_code(),
            },
            seconds: elapsed.as_secs_f64(),
            ok: result.is_ok(),
        });
        self.timings.push(Timing {
            phase: phase.into(),
            element: element.clone(),
            script: script.clone(),
            elapsed,
            ok: result.is_ok(),
        });
        result.map(|_| ()).map_err(|e| match e {
            crate::host::CmdError::Failed {
                code, tail, status, ..
            } => HookFailed {
                phase: phase.into(),
                element,
                script,
                code: code.map(|c| c.to_string()).unwrap_or(status),
                tail,
            }
            .into(),
            other => anyhow::Error::from(other),
        })
    }

    /// Runs the `-p` packages through install-packages in the chroot.
    pub fn install_extra_packages(
        &mut self,
        journal: &mut Journal,
        pkgs: &[String],
    ) -> anyhow::Result<()> {
        if pkgs.is_empty() {
            return Ok(());
        }
        log::step(&format!("installing -p packages: {}", pkgs.join(" ")));
        let env = self.phase_env(journal, Place::Chroot)?;
        journal
            .run(
                Cmd::new("installing -p packages", "install-packages")
                    .args(pkgs)
                    .env_clear()
                    .envs(&env)
                    .chroot(&self.dirs.target)
                    .log_prefix("-p"),
            )
            .context("installing the packages given with -p")?;
        Ok(())
    }

    /// The element that ships `phase/script`; hooks linked in during the
    /// build (install-types) have none of their own.
    fn element_of(&self, phase: &str, script: &str) -> String {
        let planned = self.plan.hooks.get(phase).into_iter().flatten();
        let dir = planned
            .filter(|p| p.file_name().is_some_and(|n| n == script))
            .find_map(|p| p.parent().and_then(Path::parent));
        self.plan
            .element_paths
            .iter()
            .find(|(_, p)| Some(p.as_path()) == dir)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "(linked at build time)".into())
    }

    /// A shell for `break=`, inside the chroot for chroot phases.
    fn shell_cmd(&self, phase: &str) -> Cmd {
        let place = place_of(phase);
        let cmd = Cmd::new("debug shell", "bash")
            .envs(self.base_env(place))
            .env("PS1", format!("dib-create {phase} \\w# "));
        match place {
            Place::Chroot if self.dirs.target.join("bin").exists() => cmd.chroot(&self.dirs.target),
            _ => cmd.cwd(&self.dirs.build),
        }
    }

    /// The timing table, printed at the end of a build.
    pub fn timing_table(&self) -> String {
        render_timings(&self.timings)
    }
}

/// The hooks of `phase`, listed from the merged tree `hooks` when the phase
/// starts: earlier phases may add some (install-types links its chosen
/// install.d hooks in during extra-data.d). DIB's name filter and `sort -n`
/// order; a symlink to an executable file counts.
pub fn list_hooks(hooks: &Path, phase: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(hooks.join(phase)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| element_hooks::is_executable_file(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| element_hooks::is_hook_name(n))
        .collect();
    names.sort_by(|a, b| element_hooks::sort_n_cmp(a, b));
    names
}

/// A hook that just finished.
#[derive(Debug)]
pub struct HookDone<'a> {
    pub phase: &'a str,
    pub name: &'a str,
    /// How many hooks of the phase have now run (1-based position).
    pub position: usize,
    pub count: usize,
    pub elapsed: Duration,
}

/// Told about every hook of a phase (the phase cache keys and seals here).
pub trait HookObserver {
    /// Before `name` runs; `file` is the hook in the hooks tree.
    fn before(&mut self, phase: &str, name: &str, file: &Path) -> anyhow::Result<()>;
    fn after(&mut self, journal: &mut Journal, done: &HookDone) -> anyhow::Result<()>;
}

struct NoObserver;

impl HookObserver for NoObserver {
    fn before(&mut self, _: &str, _: &str, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }
    fn after(&mut self, _: &mut Journal, _: &HookDone) -> anyhow::Result<()> {
        Ok(())
    }
}

fn phase_path(place: Place, env: &BTreeMap<String, String>, data: &Path) -> String {
    match place {
        Place::Chroot => CHROOT_PATH.to_string(),
        Place::Outside => {
            let base = env.get("PATH").cloned().unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
            if crate::host::is_root() {
                format!("{}:{base}", data.join(crate::paths::HOST_HELPERS).display())
            } else {
                base
            }
        }
    }
}

/// Drops into an interactive shell when `break=` names this point.
fn maybe_break(settings: &crate::plan::Settings, point: &str, shell: Cmd) {
    if !settings.breaks_at(point) {
        return;
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        log::warn(&format!(
            "break={point}: stdin is not a terminal, not starting a shell"
        ));
        return;
    }
    log::step(&format!(
        "break={point}: starting a shell; exit it to continue"
    ));
    if let Err(e) = log::suspend(|| shell.run_interactive()) {
        log::warn(&format!("debug shell: {e}"));
    }
}

fn render_timings(rows: &[Timing]) -> String {
    let mut out = String::from(
        "phase            element               hook                              time\n",
    );
    let mut total = Duration::ZERO;
    for t in rows {
        total += t.elapsed;
        out.push_str(&format!(
            "{:<16} {:<21} {:<33} {:>6.1}s{}\n",
            t.phase,
            t.element,
            t.script,
            t.elapsed.as_secs_f64(),
            if t.ok { "" } else { "  FAILED" }
        ));
    }
    out.push_str(&format!(
        "{:<72}{:>6.1}s\n",
        "total in hooks",
        total.as_secs_f64()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_in_dib_order() {
        let names: Vec<_> = crate::phase::hook_dirs().collect();
        assert_eq!(names.first(), Some(&"root.d"));
        assert_eq!(names.last(), Some(&"cleanup.d"));
        assert_eq!(place_of("install.d"), Place::Chroot);
        assert_eq!(place_of("finalise.d"), Place::Chroot);
        assert_eq!(place_of("post-root.d"), Place::Outside);
    }

    #[test]
    fn timing_table_totals() {
        let t = render_timings(&[Timing {
            phase: "install.d".into(),
            element: "e".into(),
            script: "10-x".into(),
            elapsed: Duration::from_millis(1500),
            ok: false,
        }]);
        assert!(
            t.contains("10-x") && t.contains("1.5s") && t.contains("FAILED"),
            "{t}"
        );
    }
}
