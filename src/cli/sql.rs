//! `segdb sql`: run statements from -c / -f, from piped stdin, or interactively (history,
//! multi-line statements ending in `;`).

use std::io::{IsTerminal, Read, Write};
use std::time::Instant;

use crate::cli::output;
use crate::config::{GlobalOpts, OutputFormat, SqlArgs};
use crate::engine::Engine;
use crate::error::{Error, Result};

pub async fn run(global: &GlobalOpts, args: SqlArgs) -> Result<i32> {
    let mut engine = Engine::open(&global.engine_config())
        .await?
        .with_caller("cli")?;
    if let Some(c) = &args.cluster {
        engine = engine.with_cluster(c)?;
    }
    let mut scripts: Vec<String> = args.command.clone();
    for f in &args.file {
        scripts.push(
            std::fs::read_to_string(f)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", f.display())))?,
        );
    }
    if scripts.is_empty() && !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        scripts.push(s);
    }
    if scripts.is_empty() {
        return repl(&engine, args.format, args.timing).await;
    }
    for script in &scripts {
        for stmt in crate::statement::split(script) {
            if let Err(e) = execute(&engine, &stmt, args.format, args.timing).await {
                eprintln!("Error: {}", one_line(&e));
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// Run one statement and print its result.
pub(crate) async fn execute(
    engine: &Engine,
    stmt: &str,
    format: OutputFormat,
    timing: bool,
) -> Result<()> {
    let started = Instant::now();
    let session = engine.session();
    let result = match session.parse_one(stmt) {
        Ok(p) => session.execute(&p, crate::statement::Role::Admin).await,
        Err(e) => Err(e),
    };
    let elapsed = started.elapsed();
    let result = result?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    output::print(&mut out, &result, format)?;
    out.flush()?;
    if timing {
        eprintln!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
    }
    Ok(())
}

pub(crate) fn one_line(e: &Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

async fn repl(engine: &Engine, format: OutputFormat, timing: bool) -> Result<i32> {
    use rustyline::error::ReadlineError;
    let mut rl = rustyline::DefaultEditor::new()
        .map_err(|e| Error::invalid(format!("cannot start the shell: {e}")))?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".segdb_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "segdb {} on {} — end statements with ';', \\q to quit",
        env!("CARGO_PKG_VERSION"),
        engine.database().location()
    );
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "segdb> "
        } else {
            "   ...> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if buf.is_empty()
                    && matches!(t, "\\q" | "quit" | "exit" | ".quit" | "quit;" | "exit;")
                {
                    break;
                }
                if !buf.is_empty() {
                    buf.push('\n');
                }
                buf.push_str(&line);
                if !ends_statement(&buf) {
                    continue;
                }
                if keep_in_history(&buf) {
                    let _ = rl.add_history_entry(buf.as_str());
                }
                for stmt in crate::statement::split(&buf) {
                    if let Err(e) = execute(engine, &stmt, format, timing).await {
                        eprintln!("Error: {}", one_line(&e));
                    }
                }
                buf.clear();
            }
            Err(ReadlineError::Interrupted) => buf.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::invalid(format!("shell: {e}"))),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(0)
}

/// Statements that may carry a raw identifier (`FORGET USER 'raw'`, `pseudonymize('raw')`) are
/// kept out of the shell's history file: raw ids must not be written anywhere.
fn keep_in_history(stmt: &str) -> bool {
    let lower = stmt.to_ascii_lowercase();
    !(lower.contains("forget")
        || lower.contains("pseudonymize(")
        || lower.contains("hash_email(")
        || lower.contains("hash_phone("))
}

/// Lexical state while scanning SQL text.
#[derive(Clone, Copy, PartialEq)]
enum Lex {
    Code,
    Single,
    Double,
    LineComment,
    BlockComment,
}

/// Does the buffer end with a `;` outside quotes and comments (so the statement is complete)?
fn ends_statement(buf: &str) -> bool {
    let mut state = Lex::Code;
    let mut last_code = ' ';
    let mut chars = buf.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            Lex::Code => {
                match c {
                    '\'' => state = Lex::Single,
                    '"' => state = Lex::Double,
                    '-' if chars.peek() == Some(&'-') => state = Lex::LineComment,
                    '/' if chars.peek() == Some(&'*') => state = Lex::BlockComment,
                    _ => {}
                }
                if state == Lex::Code && !c.is_whitespace() {
                    last_code = c;
                }
            }
            Lex::Single if c == '\'' => state = Lex::Code,
            Lex::Double if c == '"' => state = Lex::Code,
            Lex::LineComment if c == '\n' => state = Lex::Code,
            Lex::BlockComment if c == '*' && chars.peek() == Some(&'/') => {
                chars.next();
                state = Lex::Code;
            }
            _ => {}
        }
    }
    matches!(state, Lex::Code | Lex::LineComment) && last_code == ';'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ids_stay_out_of_history() {
        assert!(keep_in_history("SELECT count(*) FROM events;"));
        assert!(!keep_in_history("FORGET USER 'alice@example.com';"));
        assert!(!keep_in_history(
            "SELECT * FROM profiles WHERE user_id = PSEUDONYMIZE('alice@example.com');"
        ));
    }

    #[test]
    fn statement_end_detection() {
        assert!(ends_statement("SELECT 1;"));
        assert!(ends_statement("SELECT 1; -- done"));
        assert!(!ends_statement("SELECT ';'"));
        assert!(!ends_statement("SELECT 1"));
        assert!(!ends_statement("SELECT 1 /* ; */"));
    }
}
