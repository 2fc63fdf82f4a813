//! `resetlab generate man DIR` and `resetlab generate completions DIR` (hidden): the man pages
//! (`resetlab.8` and one per subcommand, `resetlab-hook-install.8`, …) and the bash, zsh and
//! fish completions, made from the clap definitions themselves so that they never drift from
//! the parser. tools/package.sh puts them into the .deb.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::error::{exit, Error, Result};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Man pages, section 8 (the commands are run by root): DIR/resetlab.8, DIR/resetlab-*.8.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Shell completions: DIR/resetlab.bash, DIR/_resetlab (zsh), DIR/resetlab.fish.
    Completions {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The man pages' section: resetlab is a system administration tool run by root.
pub const MAN_SECTION: &str = "8";

/// Every page as (file name, roff text): the top command's, then each visible subcommand's,
/// depth first, named as git names its pages (`resetlab-hook-install`).
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    add_pages(&cmd, &mut pages)?;
    Ok(pages)
}

fn add_pages(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual("resetlab manual")
        .source(format!("resetlab {}", env!("CARGO_PKG_VERSION")))
        .date(env!("RESETLAB_GIT_DATE"));
    let mut text = Vec::new();
    man.render(&mut text)
        .map_err(|e| Error::io("render man page", man.get_filename(), e))?;
    pages.push((man.get_filename(), text));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_pages(sub, pages)?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &[u8]) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| Error::io("write", &p, e))
}

pub fn run(a: &GenerateArgs) -> Result<i32> {
    let dir = match &a.what {
        What::Man { dir } | What::Completions { dir } => dir,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    match &a.what {
        What::Man { .. } => {
            for (name, text) in man_pages()? {
                write(dir, &name, &text)?;
            }
        }
        What::Completions { .. } => {
            for (shell, name) in [
                (Shell::Bash, "resetlab.bash"),
                (Shell::Zsh, "_resetlab"),
                (Shell::Fish, "resetlab.fish"),
            ] {
                let mut text = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "resetlab", &mut text);
                write(dir, name, &text)?;
            }
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_man_page_per_visible_command_with_a_title_line() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "resetlab.8",
            "resetlab-list.8",
            "resetlab-hook.8",
            "resetlab-hook-install.8",
        ] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        for (name, text) in &pages {
            let text = String::from_utf8_lossy(text);
            let title = name.trim_end_matches(".8");
            assert!(text.contains(&format!(".TH {title} 8 ")), "{name}: {text}");
        }
    }
}
