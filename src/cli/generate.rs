//! Man pages and shell completions generated from the clap definitions of
//! the `relayq` command (clap_mangen, clap_complete), so they cannot drift
//! from what the command accepts. `relayq completions SHELL` prints a
//! completion script; `relayq generate man|completions DIR`, a packaging
//! helper kept out of the documented command, writes the files a package
//! installs.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;

/// Section 8: system administration commands and daemons, where Debian's
/// MTAs put `sendmail(8)` and `mailq(8)`.
pub const MAN_SECTION: &str = "8";

/// The shells whose completion files a package installs, with the file
/// name each shell's completion loader looks for.
pub const PACKAGED_SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "relayq"),
    (Shell::Zsh, "_relayq"),
    (Shell::Fish, "relayq.fish"),
];

/// Writes the completion script of `shell` for `command` to `out`.
pub fn completions(shell: Shell, command: &mut Command, out: &mut dyn Write) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, command, name, out);
}

/// Writes one completion file per shell of [`PACKAGED_SHELLS`] into
/// `directory` (created if needed); returns the files written.
pub fn completion_files(command: &mut Command, directory: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(directory)?;
    let mut written = Vec::with_capacity(PACKAGED_SHELLS.len());
    for (shell, file_name) in PACKAGED_SHELLS {
        let mut script = Vec::new();
        completions(shell, command, &mut script);
        let path = directory.join(file_name);
        fs::write(&path, script)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `relayq.8` and one page per visible subcommand, nested ones
/// included (`relayq-queue.8`, `relayq-queue-list.8`, ...), into `directory`
/// (created if needed); returns the files written, the top page first.
pub fn man_pages(command: Command, directory: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(directory)?;
    let version = command.get_version().unwrap_or_default().to_owned();
    // `help` is clap's own subcommand, not a relayq command worth a page;
    // building sets each subcommand's display name (`relayq-queue-list`),
    // which is the page's name.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    write_pages(&command, &version, directory, &mut written)?;
    Ok(written)
}

fn write_pages(
    command: &Command,
    version: &str,
    directory: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let page = clap_mangen::Man::new(command.clone())
        .section(MAN_SECTION)
        .source(format!("relayq {version}"))
        .manual("relayq manual");
    written.push(page.generate_to(directory)?);
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(subcommand, version, directory, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn example() -> Command {
        Command::new("relayq")
            .version("1.2.3")
            .subcommand(Command::new("serve").arg(Arg::new("config").long("config")))
            .subcommand(
                Command::new("queue")
                    .subcommand(Command::new("list"))
                    .subcommand(Command::new("show")),
            )
            .subcommand(Command::new("generate").hide(true))
    }

    #[test]
    fn one_page_per_visible_subcommand_nested_ones_included() {
        let directory = tempfile::tempdir().unwrap();
        let written = man_pages(example(), directory.path()).unwrap();
        let mut names: Vec<String> = written
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "relayq.8");
        names.sort();
        assert_eq!(
            names,
            [
                "relayq-queue-list.8",
                "relayq-queue-show.8",
                "relayq-queue.8",
                "relayq-serve.8",
                "relayq.8",
            ]
        );
        let top = fs::read_to_string(directory.path().join("relayq.8")).unwrap();
        assert!(
            top.starts_with(".ie") || top.contains(".TH relayq 8"),
            "{top}"
        );
        assert!(top.contains("relayq 1.2.3"), "{top}");
    }

    #[test]
    fn completion_files_have_the_names_the_shells_look_for() {
        let directory = tempfile::tempdir().unwrap();
        let written = completion_files(&mut example(), directory.path()).unwrap();
        assert_eq!(written.len(), 3);
        let zsh = fs::read_to_string(directory.path().join("_relayq")).unwrap();
        assert!(zsh.starts_with("#compdef relayq"), "{zsh}");
        let fish = fs::read_to_string(directory.path().join("relayq.fish")).unwrap();
        assert!(fish.contains("complete -c relayq -n"), "{fish}");
        assert!(fish.contains("\"list\""), "nested subcommands: {fish}");
    }
}
