//! The tool's own documentation: `completions` and `manpage`.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Cli;
use crate::fail::{Fail, Outcome};
use crate::output::{self, note};

pub(super) fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fscache", &mut script);
    output::bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn manpage(dir: Option<&Path>) -> Outcome {
    let render = |cmd: clap::Command| -> Result<Vec<u8>, Fail> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| Fail::error(format!("failed to render the man page: {e}")))?;
        Ok(page)
    };
    let top = Cli::command();
    let Some(dir) = dir else {
        output::bytes(&render(top)?)?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Fail::error(format!("failed to create `{}`: {e}", dir.display())))?;
    let mut pages = vec![("fscache.1".to_owned(), render(top.clone())?)];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("fscache-{}", sub.get_name());
        let page = render(sub.clone().name(name.clone()))?;
        pages.push((format!("{name}.1"), page));
    }
    for (file, page) in pages {
        let p = dir.join(&file);
        std::fs::write(&p, page)
            .map_err(|e| Fail::error(format!("failed to write `{}`: {e}", p.display())))?;
        note!("wrote {}", p.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
