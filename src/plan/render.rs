//! The human-readable form of a plan (`--dry-run --format text`).

use std::fmt::Write;

use super::Plan;

/// Renders the plan for a person: elements, hooks per phase, packages, outputs.
pub fn render_text(plan: &Plan) -> String {
    let mut s = String::new();
    let runs = match plan.emulator {
        Some(q) => format!("emulated by qemu-{q}"),
        None => "native".to_string(),
    };
    let _ = writeln!(s, "image: {} (arch {}, {runs})", plan.image_name, plan.arch);
    let _ = writeln!(s, "\nelements (in order):");
    for name in &plan.elements {
        let path = plan
            .element_paths
            .get(name)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let _ = writeln!(s, "  {name:<30} {path}");
    }
    let _ = writeln!(s, "\nenvironment.d:");
    for f in &plan.environment {
        let _ = writeln!(s, "  {}", f.display());
    }
    let _ = writeln!(s, "\nhooks:");
    for phase in crate::phase::hook_dirs() {
        let hooks = plan.hooks.get(phase).map(Vec::as_slice).unwrap_or(&[]);
        let _ = writeln!(s, "  {phase} ({})", hooks.len());
        for h in hooks {
            let _ = writeln!(s, "    {}", h.display());
        }
    }
    let _ = writeln!(s, "\npackages:");
    let phases = crate::phase::package_phases().chain([super::EXTRA_PACKAGES]);
    for phase in phases {
        let Some(p) = plan.packages.get(phase) else {
            continue;
        };
        let _ = writeln!(s, "  {phase:<15} install   [{}]", p.install.join(" "));
        let _ = writeln!(s, "  {phase:<15} uninstall [{}]", p.uninstall.join(" "));
    }
    let _ = writeln!(s, "\noutputs:");
    for o in &plan.outputs {
        let _ = writeln!(s, "  {:<10} {}", o.kind, o.path.display());
    }
    if let Some(r) = &plan.report {
        let _ = writeln!(s, "  {:<10} {}", "report", r.display());
    }
    if let Some(o) = &plan.output_options.ostree {
        let parent = match &o.parent {
            super::Parent::Head => "the ref's current commit".to_string(),
            super::Parent::None => "none".to_string(),
            super::Parent::Commit(c) => c.clone(),
        };
        let signed = o
            .gpg
            .as_ref()
            .map_or(String::new(), |g| format!(", signed by {}", g.key_id));
        let _ = writeln!(
            s,
            "  ostree ref {} version {} (parent: {parent}{signed})",
            o.branch, o.version
        );
        if let Some(d) = &o.deploy {
            let _ = writeln!(
                s,
                "  ostree deployed into the disk: stateroot {}, following {}",
                d.os, d.refspec
            );
        }
    }
    let _ = writeln!(s, "\nhook environment (after environment.d):");
    for (k, v) in &plan.resolved_env {
        let _ = writeln!(s, "  {k}={}", v.replace('\n', "\\n"));
    }
    if let Some(bd) = &plan.block_device {
        let v = serde_json::to_value(bd).unwrap_or_default();
        render_block_device(&mut s, &v);
    }
    s
}

fn render_block_device(s: &mut String, bd: &serde_json::Value) {
    let _ = writeln!(
        s,
        "\nblock device ({}), image size {} bytes:",
        bd["source"].as_str().unwrap_or("?"),
        bd["image_size"]
    );
    for n in bd["nodes"].as_array().into_iter().flatten() {
        let bases: Vec<&str> = n["bases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .collect();
        let _ = writeln!(
            s,
            "  {:<28} {:<13} on {}",
            n["name"].as_str().unwrap_or("?"),
            n["module"].as_str().unwrap_or("?"),
            if bases.is_empty() {
                "-".to_string()
            } else {
                bases.join(", ")
            }
        );
    }
}
