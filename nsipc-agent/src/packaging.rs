//! What the Debian package ships beside the binary, generated from the command line's own
//! definition (cli.rs), so that they cannot drift from it: the man pages (`nsipc-agent man
//! DIR`) and the shell completions (`nsipc-agent completions bash|zsh|fish`). `cargo xtask deb`
//! runs both.

use std::{fs, io::Write, path::Path};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::{
    cli::{Cli, CompletionShell},
    output::sink::write_all_quietly,
};

/// The program name the pages and scripts are for.
const BIN: &str = "nsipc-agent";

/// Writes `nsipc-agent.1` and one page per subcommand (`nsipc-agent-trace.1`, …; not the
/// hidden ones) into `dir`, which is made if missing.
pub fn man_pages(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))
}

/// Writes the completion script for `shell` into `out`.
pub fn completions(shell: CompletionShell, out: &mut dyn Write) -> Result<()> {
    let script = match shell {
        CompletionShell::Bash => bash_script(),
        CompletionShell::Zsh => script(clap_complete::Shell::Zsh, BIN),
        CompletionShell::Fish => script(clap_complete::Shell::Fish, BIN),
    };
    write_all_quietly(out, &script).context("writing the completion script")
}

fn script(shell: clap_complete::Shell, bin: &str) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), bin, &mut script);
    script
}

/// The bash script, made for `nsipc_agent` and then registered for `nsipc-agent`: clap_complete
/// 4.6 spells the state of a subcommand in two ways when the program's name has a hyphen, so
/// that nothing past the subcommand (`nsipc-agent trace --<TAB>`) would complete
/// (clap-rs/clap#6421). Only the `complete` lines name the program.
fn bash_script() -> Vec<u8> {
    const STAND_IN: &str = "nsipc_agent";
    let script = String::from_utf8(script(clap_complete::Shell::Bash, STAND_IN))
        .expect("clap_complete writes UTF-8");
    let mut fixed = String::with_capacity(script.len());
    for line in script.split_inclusive('\n') {
        if line.trim_start().starts_with("complete -F ") {
            fixed.push_str(&line.replace(&format!(" {STAND_IN}\n"), &format!(" {BIN}\n")));
        } else {
            fixed.push_str(line);
        }
    }
    fixed.into_bytes()
}

/// The command line without its hidden subcommands (`bench-*`, `man`, `completions`), which
/// clap_complete would offer otherwise: clap cannot remove a subcommand, so the command is
/// made again around the visible ones.
fn visible_command() -> clap::Command {
    let cli = Cli::command();
    let mut command = clap::Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(
            cli.get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    if let Some(about) = cli.get_about() {
        command = command.about(about.clone());
    }
    command
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_page_for_the_command_and_each_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("nsipc-man-{}", std::process::id()));
        man_pages(&dir).unwrap();
        let mut pages: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        let read = |page: &str| fs::read_to_string(dir.join(page)).unwrap();
        let main = read("nsipc-agent.1");
        let trace = read("nsipc-agent-trace.1");
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            pages,
            [
                "nsipc-agent-check.1",
                "nsipc-agent-snapshot.1",
                "nsipc-agent-trace.1",
                "nsipc-agent.1"
            ]
        );
        assert!(main.starts_with(".ie \\n(.g .ds Aq"), "roff: {main}");
        assert!(main.contains(".TH nsipc-agent 1"), "{main}");
        assert!(main.contains("nsipc\\-agent\\-trace(1)"), "{main}");
        assert!(!main.contains("bench"), "hidden commands stay out: {main}");
        assert!(trace.contains("\\-\\-output"), "{trace}");
        assert!(trace.contains("\\-\\-events"), "{trace}");
    }

    /// Asks bash for the completions of the last word of `words` with the completion
    /// `script` loaded: the function `complete -p` names, called as bash calls it (command,
    /// word, previous word).
    fn bash_complete(script: &str, words: &str) -> std::process::Output {
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{script}\n\
                 function=$(complete -p nsipc-agent | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
                 COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
                 COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}\n\
                 \"$function\" nsipc-agent \"${{COMP_WORDS[COMP_CWORD]}}\" \
                 \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
                 echo \"${{COMPREPLY[@]}}\""
            ))
            .output()
            .expect("running bash")
    }

    /// The script, loaded by bash itself, completes `nsipc-agent tr` to `trace`.
    #[test]
    fn bash_completes_the_subcommands() {
        let mut script = Vec::new();
        completions(CompletionShell::Bash, &mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(!script.contains("bench-json"), "hidden commands stay out");
        let complete = |words: &str| {
            let out = bash_complete(&script, words);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(complete("nsipc-agent tr"), "trace");
        assert_eq!(complete("nsipc-agent s"), "snapshot");
        assert_eq!(complete("nsipc-agent trace --out"), "--output");
        assert_eq!(complete("nsipc-agent trace --output p"), "pretty");
        assert_eq!(complete("nsipc-agent be"), "", "hidden: not offered");
    }

    #[test]
    fn completions_offer_what_the_help_shows() {
        let names = |command: &clap::Command| -> Vec<String> {
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(|sub| sub.get_name().to_owned())
                .collect()
        };
        let visible = visible_command();
        assert_eq!(names(&visible), ["trace", "snapshot", "check"]);
        assert_eq!(names(&visible), names(&Cli::command()));
        assert_eq!(visible.get_subcommands().count(), 3, "nothing hidden left");
        let trace = visible.find_subcommand("trace").unwrap();
        assert!(trace.get_arguments().any(|arg| arg.get_id() == "output"));
    }

    #[test]
    fn zsh_and_fish_scripts_name_the_subcommands() {
        for (shell, marker) in [
            (CompletionShell::Zsh, "#compdef nsipc-agent"),
            (CompletionShell::Fish, "complete -c nsipc-agent"),
        ] {
            let mut script = Vec::new();
            completions(shell, &mut script).unwrap();
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains(marker), "{shell:?}: {script}");
            assert!(script.contains("trace"), "{shell:?}");
            assert!(script.contains("snapshot"), "{shell:?}");
            assert!(!script.contains("bench-json"), "{shell:?}");
        }
    }
}
