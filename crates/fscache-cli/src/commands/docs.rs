//! The tool's own documentation: `completions` (with entry names
//! completed in bash by the hidden `__complete`) and `manpage`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};

use crate::args::{Cli, CACHE_ENV};
use crate::fail::{Fail, Outcome};
use crate::output::{self, note};

/// Appended to clap's bash script: entry names, from the cache the command
/// line names (an argument or `--cache`) or else `$FSCACHE_DIR`, as git
/// completes branches. `fscache __complete -- WORDS...` prints the names
/// that fit where the cursor is, or nothing: then clap's completion
/// stands (options, paths).
const BASH_NAMES: &str = r#"
_fscache_with_names() {
    _fscache "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}"
    [[ "$cur" == -* ]] && return 0
    local names
    names=$("$1" __complete -- "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null) || return 0
    [[ -n "$names" ]] || return 0
    COMPREPLY=($(compgen -W "$names" -- "$cur"))
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _fscache_with_names -o nosort -o bashdefault -o default fscache
else
    complete -F _fscache_with_names -o bashdefault -o default fscache
fi
"#;

pub(super) fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut cmd = Cli::command();
    cmd.build();
    let mut shown = shown(&cmd);
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut shown, "fscache", &mut script);
    if shell == clap_complete::Shell::Bash {
        script.extend_from_slice(BASH_NAMES.as_bytes());
    }
    output::bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// A built `cmd` as a user may type it, for completion: without hidden
/// commands (`manpage`, `__complete`) and hidden options (the global ones
/// where they mean nothing), which clap_complete's bash script would offer.
fn shown(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_owned())
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true);
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_owned());
    }
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    // Built: the global options are in every subcommand already.
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        out = out.arg(a.clone().global(false));
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(shown(sub));
    }
    out
}

/// The commands whose positional words after the cache are names of
/// entries in it.
const NAMED: &[&str] = &["load", "cat", "rm", "verify", "push"];

/// `fscache __complete -- WORDS...`: the names of the entries of the cache
/// the words name, when the next word is an entry name; nothing else.
/// Never an error (a completion must not print one). The listing is
/// `ls`'s, so it sweeps the debris of dead writers as `ls` does.
pub(super) fn complete(words: &[OsString]) -> Outcome {
    let env = std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let is_cache = |p: &Path| p.join("cache.info").exists();
    if let Some(cache) = names_cache(words, env, &is_cache) {
        if let Ok(entries) =
            fscache::FsCache::open(crate::args::APPID, &cache).and_then(|c| c.entries())
        {
            let mut names = String::new();
            for e in entries {
                names.push_str(&e.name);
                names.push('\n');
            }
            output::bytes(names.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The cache whose entry names fit the word after `words` (the words after
/// `fscache`), as `args::split_cache*` would read the finished line; `None`
/// where the word is no entry name (or may be the cache, which is a path).
fn names_cache(
    words: &[OsString],
    env: Option<PathBuf>,
    is_cache: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut flag = None;
    let mut command = None;
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let b = w.as_encoded_bytes();
        if w == "--" {
            // `load … -- CMD`: the command's words.
            return None;
        } else if w == "--cache" {
            flag = Some(expand(it.next()?));
        } else if let Some(v) = b.strip_prefix(b"--cache=") {
            flag = Some(expand(&OsString::from(
                String::from_utf8_lossy(v).into_owned(),
            )));
        } else if w == "--remote" {
            it.next()?;
        } else if b.starts_with(b"-") {
            // A flag without a value.
        } else if command.is_none() {
            command = Some(w.to_string_lossy().into_owned());
        } else {
            positional.push(expand(w));
        }
    }
    let command = command?;
    if !NAMED.contains(&command.as_str()) {
        return None;
    }
    // How many entry names the command takes after the cache, and where
    // the next word falls among the positional words.
    let names_after_cache = match command.as_str() {
        "load" | "cat" => Some(1),
        _ => None,
    };
    let (cache, names_given) = if let Some(c) = flag {
        (c, positional.len())
    } else if let Some(first) = positional.first().filter(|p| {
        env.is_none() || p.as_os_str().as_encoded_bytes().contains(&b'/') || is_cache(p)
    }) {
        (first.clone(), positional.len() - 1)
    } else {
        (env?, positional.len())
    };
    match names_after_cache {
        Some(n) if names_given >= n => None,
        _ => Some(cache),
    }
}

/// A leading `~/` as the shell would expand it (the completion sees the
/// word as typed).
fn expand(w: &OsStr) -> PathBuf {
    let p = Path::new(w);
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => p.to_path_buf(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::COMPLETE;

    fn at(line: &str, env: Option<&str>) -> Option<PathBuf> {
        let words: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        names_cache(&words, env.map(PathBuf::from), &|p| p.ends_with("c"))
    }

    #[test]
    fn names_are_offered_where_an_entry_name_goes() {
        let c = Some(PathBuf::from("/x/c"));
        // The cache as the first argument, from --cache, or from the
        // environment.
        assert_eq!(at("verify /x/c", None), c);
        assert_eq!(at("verify /x/c a b", None), c);
        assert_eq!(at("--cache /x/c rm", None), c);
        assert_eq!(at("rm --cache=/x/c a", None), c);
        assert_eq!(at("-q load", Some("/x/c")), c);
        assert_eq!(at("push --remote file:///r /x/c", None), c);
        // A first word that is a cache wins over the environment.
        assert_eq!(at("rm /x/c", Some("/y/d")), c);
        // An explicit path means the cache, too (it has a `/`).
        assert_eq!(at("cat ./c", Some("/y/d")), Some(PathBuf::from("./c")));
        // Where the word may be the cache: a path, no names.
        assert_eq!(at("verify", None), None);
        assert_eq!(at("load", None), None);
        // After the one name of load and cat (cat's PATH), after `--`,
        // and for commands whose words are no entry names.
        assert_eq!(at("load /x/c a", None), None);
        assert_eq!(at("cat a", Some("/x/c")), None);
        assert_eq!(at("load /x/c a -- ls", None), None);
        assert_eq!(at("store /x/c", None), None);
        assert_eq!(at("ls", Some("/x/c")), None);
        assert_eq!(at("", Some("/x/c")), None);
    }

    #[test]
    fn completion_offers_no_hidden_command_or_option() {
        let mut cmd = Cli::command();
        cmd.build();
        let shown = shown(&cmd);
        let subs: Vec<&str> = shown.get_subcommands().map(Command::get_name).collect();
        assert!(
            subs.contains(&"verify") && subs.contains(&"help"),
            "{subs:?}"
        );
        assert!(
            !subs.contains(&"manpage") && !subs.contains(&COMPLETE),
            "{subs:?}"
        );
        let opts = |name: &str| -> Vec<String> {
            shown
                .find_subcommand(name)
                .unwrap()
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        };
        assert_eq!(opts("completions"), ["help"]);
        assert!(opts("verify").contains(&"cache".to_owned()));
        let keygen: Vec<String> = shown
            .find_subcommand("remote")
            .and_then(|r| r.find_subcommand("keygen"))
            .unwrap()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        assert_eq!(keygen, ["json", "help"]);
    }
}
