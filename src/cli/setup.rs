//! What a user installs around the binary: shell completions and the manual
//! page, both made from the flag definitions, and the long `--version`,
//! which names the host tools whose versions change what a build does.

use clap::CommandFactory;
use std::io::Write;

use super::{Cli, Shell};

/// Element names complete from `dib-create --list-elements` (bash).
const BASH_ELEMENTS: &str = r#"
# Element names: what `dib-create --list-elements` finds on ELEMENTS_PATH.
_dib_create_with_elements() {
    _dib__create "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}"
    if [[ "$cur" != -* ]]; then
        local IFS=$'\n'
        COMPREPLY+=( $(compgen -W "$(dib-create --list-elements 2>/dev/null)" -- "$cur") )
    fi
}
complete -F _dib_create_with_elements -o bashdefault -o default dib-create
"#;

/// Element names complete from `dib-create --list-elements` (fish).
const FISH_ELEMENTS: &str =
    "complete -c dib-create -f -a '(dib-create --list-elements 2>/dev/null)'\n";

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, name, out);
    match shell {
        Shell::Bash => out.write_all(BASH_ELEMENTS.as_bytes()),
        Shell::Fish => out.write_all(FISH_ELEMENTS.as_bytes()),
        Shell::Zsh => Ok(()),
    }
}

/// Writes the manual page (roff).
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// `--version`: ours, the git revision, and the versions of the host
/// packages whose tools shape a build (the phase cache keys the same ones).
pub fn long_version() -> String {
    let names: Vec<&str> = crate::pkgdb::HOST_TOOLS.iter().map(|t| t.package).collect();
    let versions = crate::pkgdb::host().host_versions(&names);
    let mut s = format!(
        "{} (git {})\nhost tools:",
        env!("CARGO_PKG_VERSION"),
        env!("DIB_CREATE_GIT_REVISION")
    );
    for t in crate::pkgdb::HOST_TOOLS {
        let version = versions
            .get(t.package)
            .map_or("not installed", String::as_str);
        s.push_str(&format!("\n  {}: {version} ({})", t.command, t.package));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_man_page_are_made_from_the_flags() {
        let mut bash = Vec::new();
        completions(Shell::Bash, &mut bash).unwrap();
        let bash = String::from_utf8(bash).unwrap();
        assert!(
            bash.contains("--lockfile") && bash.contains("--list-elements"),
            "{bash}"
        );
        assert!(bash.contains("_dib_create_with_elements"));
        // Our wrapper calls clap's function by the name clap gives it.
        assert!(bash.contains("\n_dib__create() {") || bash.starts_with("_dib__create() {"));
        let mut fish = Vec::new();
        completions(Shell::Fish, &mut fish).unwrap();
        assert!(
            String::from_utf8(fish)
                .unwrap()
                .contains("dib-create --list-elements")
        );
        let mut page = Vec::new();
        man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("lockfile"));
    }
}
